"""Fusion metrics as MONAI metrics: the fused image F against each source, averaged over the sources.

``y_pred`` is F [B, 1, *S]; ``y`` the sources [B, 2, *S] (MRI, PET), all in [0, 1].
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric, PSNRMetric, SSIMMetric


class _MeanOverSources(CumulativeIterationMetric):
    def __init__(self, per_source: CumulativeIterationMetric, reduction: str = "mean") -> None:
        super().__init__()
        self.per_source = per_source
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape[1] != 1 or y.shape[1] != 2:
            raise ValueError(f"expected y_pred [B,1,...] and y [B,2,...], got {tuple(y_pred.shape)}, {tuple(y.shape)}")
        values = [self.per_source._compute_tensor(y_pred, y[:, i:i + 1]).reshape(y.shape[0], -1).mean(1)
                  for i in range(2)]
        return torch.stack(values, dim=1).mean(dim=1, keepdim=True)  # [B, 1]

    def aggregate(self, reduction: str | None = None):
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        return data.float().mean() if (reduction or self.reduction) == "mean" else data


class FusionSSIMMetric(_MeanOverSources):
    """Mean of SSIM(F, MRI) and SSIM(F, PET) over the whole volume (MONAI's SSIMMetric, Gaussian window)."""

    def __init__(self, spatial_dims: int = 3, win_size: int = 7, reduction: str = "mean") -> None:
        super().__init__(SSIMMetric(spatial_dims=spatial_dims, data_range=1.0, win_size=win_size), reduction)


class FusionPSNRMetric(_MeanOverSources):
    """Mean of PSNR(F, MRI) and PSNR(F, PET) in dB, data range 1 (MONAI's PSNRMetric)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(PSNRMetric(max_val=1.0), reduction)
