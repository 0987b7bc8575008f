"""Training with a PET emphasis drawn per sample: the batch preparation that hands lambda to the network
and to the loss, so that one network learns the whole trade-off between the two sources.

MONAI's ``SupervisedTrainer`` passes the extra arguments of ``prepare_batch`` to the network (through the
inferer) but gives the loss only ``(pred, label)``; the label is therefore an ``EmphasisTarget`` that
carries lambda beside the sources, and ``FusionLoss`` reads both from it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["EmphasisTarget", "EmphasisBatch"]


class EmphasisTarget(NamedTuple):
    """The loss's target: ``sources`` [B, 2, *S] (MRI, PET) and the ``pet_emphasis`` [B] the network saw."""

    sources: torch.Tensor
    pet_emphasis: torch.Tensor


class EmphasisBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: the image, an ``EmphasisTarget``, and ``pet_emphasis`` for
    the network, with lambda drawn uniformly from [``low``, ``high``] per sample (torch's global generator, so
    ``monai.utils.set_determinism`` makes it repeatable).

    Args:
        low, high: the range of lambda, within [0, 1].
        image_key: the batch's 2-channel image.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, image_key: str = "image") -> None:
        if not 0.0 <= float(low) <= float(high) <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got low={low!r}, high={high!r}")
        self.low, self.high, self.image_key = float(low), float(high), image_key

    def __call__(
        self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, EmphasisTarget, tuple, dict]:
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking)
        emphasis = self.low + (self.high - self.low) * torch.rand(image.shape[0])
        emphasis = emphasis.to(device=image.device, dtype=image.dtype)
        return image, EmphasisTarget(image, emphasis), (), {"pet_emphasis": emphasis}
