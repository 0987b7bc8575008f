"""Fusion metrics as MONAI metrics: the fused image F against each source, averaged over the sources.

``y_pred`` is F [B, 1, *S]; ``y`` the sources [B, 2, *S] (MRI, PET), all in [0, 1].
"""

from __future__ import annotations

import torch
from monai.metrics import CumulativeIterationMetric, PSNRMetric, SSIMMetric

from . import fusion_measures as fm


class _MeanOverSources(CumulativeIterationMetric):
    def __init__(self, per_source: CumulativeIterationMetric, reduction: str = "mean") -> None:
        super().__init__()
        self.per_source = per_source
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape[1] != 1 or y.shape[1] != 2:
            raise ValueError(f"expected y_pred [B,1,...] and y [B,2,...], got {tuple(y_pred.shape)}, {tuple(y.shape)}")
        values = [
            self.per_source._compute_tensor(y_pred, y[:, i : i + 1]).reshape(y.shape[0], -1).mean(1) for i in range(2)
        ]
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


def head_mask(sources: torch.Tensor, threshold: float) -> torch.Tensor:
    """The head: voxels where either source ([2, *S], in [0, 1]) exceeds ``threshold``."""
    return (sources > threshold).any(dim=0)


class FusionMeasureMetric(CumulativeIterationMetric):
    """A measure of ``fusion_measures`` as a MONAI metric, taken inside the head mask of each batch item.

    ``y_pred``: F [B, 1, *S]; ``y``: sources [B, 2, *S] (MRI, PET), in [0, 1]. Returns [B, 1]; ``aggregate``
    gives the mean over the buffer (NaN items left out) or, with ``reduction="none"``, the buffer.
    """

    def __init__(self, measure, mask_threshold: float = 0.05, reduction: str = "mean") -> None:
        super().__init__()
        self.measure, self.mask_threshold, self.reduction = measure, mask_threshold, reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape[1] != 1 or y.shape[1] != 2 or y_pred.shape[2:] != y.shape[2:]:
            raise ValueError(f"expected y_pred [B,1,*S] and y [B,2,*S], got {tuple(y_pred.shape)}, {tuple(y.shape)}")
        values = []
        for f, sources in zip(y_pred.detach(), y.detach()):
            mask = head_mask(sources, self.mask_threshold)
            values.append(self.measure(f[0], sources[0], sources[1], mask))
        return torch.stack(values).float()[:, None]

    def aggregate(self, reduction: str | None = None):
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        return data.float().nanmean() if (reduction or self.reduction) == "mean" else data


def _metric(name: str, measure, doc: str):
    def init(self, mask_threshold: float = 0.05, reduction: str = "mean") -> None:
        FusionMeasureMetric.__init__(self, measure, mask_threshold, reduction)

    return type(name, (FusionMeasureMetric,), {"__init__": init, "__doc__": doc})


FusionEntropyMetric = _metric(
    "FusionEntropyMetric", lambda f, a, b, m: fm.entropy(f, m), "EN of F in bits (see ``fusion_measures.entropy``)."
)
FusionSDMetric = _metric(
    "FusionSDMetric",
    lambda f, a, b, m: fm.standard_deviation(f, m),
    "SD of F (see ``fusion_measures.standard_deviation``).",
)
FusionSFMetric = _metric(
    "FusionSFMetric",
    lambda f, a, b, m: fm.spatial_frequency(f, m),
    "SF of F, 3D form (see ``fusion_measures.spatial_frequency``).",
)
FusionAGMetric = _metric(
    "FusionAGMetric",
    lambda f, a, b, m: fm.average_gradient(f, m),
    "AG of F, 3D form (see ``fusion_measures.average_gradient``).",
)
FusionMIMetric = _metric(
    "FusionMIMetric",
    fm.fusion_mutual_information,
    "MI(F, MRI) + MI(F, PET) in bits (see ``fusion_measures.fusion_mutual_information``).",
)
FusionNMIMetric = _metric(
    "FusionNMIMetric",
    fm.normalized_mutual_information,
    "NMI of Hossny et al., in [0, 2] (see ``fusion_measures.normalized_mutual_information``).",
)
FusionFMIMetric = _metric(
    "FusionFMIMetric",
    fm.feature_mutual_information,
    "FMI with pixel features, Fast-FMI, 3x3x3 windows (see ``fusion_measures.feature_mutual_information``).",
)
FusionSCDMetric = _metric(
    "FusionSCDMetric",
    fm.sum_of_correlations_of_differences,
    "SCD in [-2, 2] (see ``fusion_measures.sum_of_correlations_of_differences``).",
)
FusionVIFMetric = _metric(
    "FusionVIFMetric",
    fm.fusion_visual_information_fidelity,
    "VIF(MRI -> F) + VIF(PET -> F) (see ``fusion_measures.visual_information_fidelity``).",
)
FusionQabfMetric = _metric("FusionQabfMetric", fm.qabf, "Q^AB/F with Sobel gradients (see ``fusion_measures.qabf``).")
FusionMaskedPSNRMetric = _metric(
    "FusionMaskedPSNRMetric",
    lambda f, a, b, m: (fm.masked_psnr(f, a, m) + fm.masked_psnr(f, b, m)) / 2,
    "Mean of PSNR(F, MRI) and PSNR(F, PET) in dB with the MSE taken in the head mask.",
)

FusionMaskedSSIMMetric = _metric(
    "FusionMaskedSSIMMetric",
    lambda f, a, b, m: (fm.masked_ssim(f, a, m) + fm.masked_ssim(f, b, m)) / 2,
    "Mean of SSIM(F, MRI) and SSIM(F, PET), the SSIM map averaged in the head mask (7-voxel Gaussian window).",
)


# the cohort generator's labels: 1-8 the regions of Alzheimer-like hypometabolism, 9-12 the reference regions
TARGET_REGION_LABELS = tuple(range(1, 9))
REFERENCE_REGION_LABELS = tuple(range(9, 13))


class RegionalPatternMetric(CumulativeIterationMetric):
    """How well F keeps the PET's regional pattern (see ``fusion_measures.regional_pattern``).

    Call with ``y_pred`` F [B, 1, *S], ``y`` sources [B, 2, *S] and ``regions`` [B, 1, *S] (the label image that
    the cohort generator writes, on the same grid). Returns [B, 2]: correlation of regional means, contrast kept.
    Defaults: labels 1-8 are the Alzheimer target regions, 9-12 the reference regions of the simulated cohort.
    """

    def __init__(
        self, target_labels=TARGET_REGION_LABELS, reference_labels=REFERENCE_REGION_LABELS, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.target_labels, self.reference_labels, self.reduction = target_labels, reference_labels, reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, regions: torch.Tensor | None = None):  # type: ignore[override]
        if regions is None:
            raise ValueError("RegionalPatternMetric needs the regions label image: metric(y_pred, y, regions=...)")
        rows = [
            torch.stack(fm.regional_pattern(f[0], s[1], r[0].round().long(), self.target_labels, self.reference_labels))
            for f, s, r in zip(y_pred.detach(), y.detach(), regions.detach())
        ]
        return torch.stack(rows).float()

    def aggregate(self, reduction: str | None = None):
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        return data.float().nanmean(dim=0) if (reduction or self.reduction) == "mean" else data
