"""Inference over a whole volume in one pass, or over overlapping windows.

A network with instance normalisation normalises its features on the statistics of whatever it is given. Over
sliding windows every window has its own statistics, and the fused volume shows each window's level as a step at
the window borders (about 1.5 % of full scale on the background, visible at a narrow display window); over the
whole volume there is one set of statistics and no border, but they are not the statistics of the training
patches. For the released network (instance normalisation, trained on 96^3 patches) that costs quality: on the
test split the training objective of one whole-volume pass was no better than the best global blend of the
sources, while 96^3 windows closed about a third of the gap to the per-subject optimum (bundle/docs/report.md).
So the bundle's ``inference.json`` uses 96^3 windows (``max_voxels_one_pass`` 0); a network whose normalisation
does not depend on the field of view (``DCFBNet(norm="CHANNEL")``) runs in one pass with no seams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["WholeVolumeInferer"]


class WholeVolumeInferer(Inferer):
    """``network(inputs)`` on the whole volume when it has at most ``max_voxels`` voxels, otherwise overlapping
    windows (``roi_size``, ``overlap``, Gaussian blending).

    Args:
        max_voxels: the largest volume run in one pass (16 M voxels take about 4.5 GB at fp32 on a CPU with this
            network; a 1 mm brain grid, 197 x 233 x 189, has 8.7 M); 0 always uses windows.
        roi_size, overlap, sw_batch_size, progress: of the fallback ``SlidingWindowInferer``.

    Shapes: ``inputs`` [B, C, *S] -> the network's output [B, C', *S].
    """

    def __init__(
        self,
        max_voxels: int = 16_000_000,
        roi_size: Sequence[int] = (128, 128, 128),
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if int(max_voxels) < 0:
            raise ValueError(f"max_voxels must be 0 (always windows) or positive, got {max_voxels!r}")
        self.max_voxels = int(max_voxels)
        self.windows = SlidingWindowInferer(
            roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", progress=progress
        )

    @property
    def roi_size(self) -> Sequence[int]:
        return self.windows.roi_size

    def uses_windows(self, inputs: torch.Tensor) -> bool:
        return math.prod(inputs.shape[2:]) > self.max_voxels

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if self.uses_windows(inputs):
            return self.windows(inputs, network, *args, **kwargs)
        return network(inputs, *args, **kwargs)
