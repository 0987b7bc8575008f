"""Unsupervised fusion loss: the fused image should resemble each source in structure (SSIM), local
correlation (LNCC), intensity (L1), low-frequency intensity (L1 after a Gaussian low-pass) and visual
information kept (VIF), with per-source weights; optionally keep the sharper source's gradients."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.losses import LocalNormalizedCrossCorrelationLoss
from monai.networks.layers.convutils import gaussian_1d

from .fusion_measures import banded_separable_filtering, ssim_from_moments, ssim_window, vif_local_moments


class SeparableSSIMLoss(nn.Module):
    """1 - SSIM with a Gaussian window, as MONAI's ``SSIMLoss`` (same window, constants, valid-region
    mean), computed with a separable filter (``banded_separable_filtering``).

    Why not ``monai.losses.SSIMLoss`` itself: it filters with a dense k^d kernel, whose CPU backward at
    128^3 took 9 s here, longer than the whole network's step; the separable filter gives the same
    values (tested against SSIMLoss) at a fraction of the cost.

    Shapes: ``pred`` [B, C, *S] or [B, 1, *S], ``target`` [B, C, *S] -> per-channel loss [B, C]. A one-channel
    ``pred`` is compared with every target channel, its local moments filtered once (the fusion loss compares
    one fused image with two sources).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        win_size: int = 7,
        sigma: float = 1.5,
        data_range: float = 1.0,
        k1: float = 0.01,
        k2: float = 0.03,
    ) -> None:
        super().__init__()
        self.register_buffer("kernel", ssim_window(win_size, sigma), persistent=False)
        self.spatial_dims, self.half = spatial_dims, win_size // 2
        self.c1, self.c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kernels = [self.kernel.to(pred)] * self.spatial_dims
        p, c = pred.shape[1], target.shape[1]
        if p not in (1, c):
            raise ValueError(f"pred needs 1 or {c} channels, got {p}")
        stacked = torch.cat([pred, pred * pred, target, target * target, pred * target], dim=1)
        filtered = banded_separable_filtering(stacked, kernels)
        valid = [slice(None), slice(None)] + [slice(self.half, s - self.half) for s in pred.shape[2:]]
        mu_x, mu_xx, mu_y, mu_yy, mu_xy = torch.split(filtered[tuple(valid)], [p, p, c, c, c], dim=1)
        ssim = ssim_from_moments(mu_x, mu_y, mu_xx, mu_yy, mu_xy, self.c1, self.c2)
        # mean over the valid region, per image and channel: [B, C]
        return 1.0 - ssim.flatten(2).mean(dim=2)


class FusionLoss(nn.Module):
    """Weighted sum over the sources s in (MRI, PET) of SSIM, LNCC, L1 and low-pass L1 losses between F and s.

    The defaults are the paper's: 2*LNCC(F, MRI) + 1*LNCC(F, PET) + 2*SSIM(F, MRI) + 1*SSIM(F, PET)
    + 2*L1(F, MRI) + 1*L1(F, PET) (weights 2:1:2:1:2:1). The bundle trains with other weights
    (``configs/train.json``): the paper's weights pull F to the MRI (its L1 term at 2:1 is minimised voxel
    by voxel at the MRI; on a test subject the F that minimises the whole loss had SSIM 0.99 with the MRI
    and 0.10 with the PET), which loses the PET's regional pattern; see ``docs/report.md``.
    ``lowpass_weights`` compare F and s after a Gaussian low-pass of ``lowpass_sigma`` voxels, i.e. the
    regional intensity level that a PET reader looks at, and leave the fine structure to SSIM.
    ``gradient_weight`` adds the L1 distance between |grad F| and the larger of |grad MRI| and
    |grad PET| per voxel. ``vif_weights`` add 1 - VIF(s -> F), Sheikh and Bovik's visual information
    fidelity with the windows of the evaluation metric (``fusion_measures.vif_local_moments``) over the
    whole patch, in a smooth and bounded form (see ``_vif``).
    A term whose weights are all zero is not computed.

    PET emphasis: given a lambda in [0, 1] per sample (``forward``'s ``pet_emphasis``), every MRI weight is
    multiplied by 2 (1 - lambda) and every PET weight by 2 lambda, so lambda = 0.5 is the loss as
    configured, 0 only the MRI terms and 1 only the PET terms. This is the loss of a network conditioned on
    lambda (``DCFBNet``'s ``pet_emphasis``); without lambda the weights are used as they are.

    Args:
        spatial_dims: 2 or 3.
        ssim_weights, ncc_weights, l1_weights, lowpass_weights, vif_weights: (MRI, PET) weights of each term.
        gradient_weight: weight of the gradient-preservation term (0 disables it).
        ssim_win_size: SSIM window (MONAI's gaussian kernel), ncc_kernel_size: LNCC window.
        lowpass_sigma: standard deviation of the low-pass Gaussian, in voxels.

    Shapes: ``pred`` [B, 1, *S] the fused image; ``target`` [B, 2, *S] (MRI, PET), values in [0, 1];
    ``pet_emphasis`` None, a float or [B]. ``SupervisedTrainer`` passes the input image as the target
    (``label`` = ``image``), or an ``EmphasisTarget`` (``scripts.conditioning``) that carries lambda too.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        ssim_weights=(2.0, 1.0),
        ncc_weights=(2.0, 1.0),
        l1_weights=(2.0, 1.0),
        lowpass_weights=(0.0, 0.0),
        vif_weights=(0.0, 0.0),
        gradient_weight: float = 0.0,
        ssim_win_size: int = 7,
        ncc_kernel_size: int = 7,
        lowpass_sigma: float = 3.0,
    ) -> None:
        super().__init__()
        for name, w in (
            ("ssim_weights", ssim_weights),
            ("ncc_weights", ncc_weights),
            ("l1_weights", l1_weights),
            ("lowpass_weights", lowpass_weights),
            ("vif_weights", vif_weights),
        ):
            if len(w) != 2:
                raise ValueError(f"{name} must give (MRI, PET) weights, got {w}")
        self.spatial_dims = spatial_dims
        self.ssim_weights = [float(w) for w in ssim_weights]
        self.ncc_weights = [float(w) for w in ncc_weights]
        self.l1_weights = [float(w) for w in l1_weights]
        self.lowpass_weights = [float(w) for w in lowpass_weights]
        self.vif_weights = [float(w) for w in vif_weights]
        self.gradient_weight = float(gradient_weight)
        self.ssim = SeparableSSIMLoss(spatial_dims=spatial_dims, win_size=ssim_win_size)
        self.ncc = LocalNormalizedCrossCorrelationLoss(
            spatial_dims=spatial_dims, kernel_size=ncc_kernel_size, reduction="none"
        )
        # MONAI's GaussianFilter kernel (erf approximation, truncated at 3 sigma), applied by the banded filter
        self.register_buffer(
            "lowpass_kernel", gaussian_1d(lowpass_sigma, truncated=3.0, approx="erf"), persistent=False
        )

    def _gradient_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        # forward differences cropped to a common shape; MONAI has no gradient-magnitude transform
        # that is differentiable and batched on tensors
        diffs = [torch.diff(x, dim=d) for d in range(2, 2 + self.spatial_dims)]
        crop = [slice(None), slice(None)] + [slice(0, s - 1) for s in x.shape[2:]]
        return torch.sqrt(sum(d[tuple(crop)] ** 2 for d in diffs) + 1e-8)

    @staticmethod
    def _vif(reference: torch.Tensor, distorted: torch.Tensor, noise_variance: float = 2.0) -> torch.Tensor:
        """VIF(reference -> distorted) per image and channel, [B, C], with two changes to the metric:

        - the gain is min(max(s12, 0) / (s1^2 + 1e-3), 1): the metric's special cases (flat windows, negative
          gain: no information) reach the same limits without branches whose gradients are undefined, and a
          gain above 1 (contrast stretched beyond the source's) earns nothing. Uncapped, a network learned to
          stretch the contrast of near-empty patches, where the ratio below explodes (2D slices off the
          head's edge reached a loss of -7); capped, each voxel's information is at most the source's, so
          the term lies in [0, 1].
        - sums over the whole patch, not a head mask (the background has no local variance and adds nothing).
        """
        num = den = 0.0
        for _, s1, s2, s12 in vif_local_moments(reference, distorted):
            gain = (s12.clamp_min(0) / (s1 + 1e-3)).clamp_max(1.0)
            distortion = (s2 - gain * s12).clamp_min(0)
            num = num + torch.log10(1 + gain**2 * s1 / (distortion + noise_variance)).flatten(2).sum(2)
            den = den + torch.log10(1 + s1 / noise_variance).flatten(2).sum(2)
        return num / den.clamp_min(1e-6)

    @staticmethod
    def source_scale(pet_emphasis, batch: int, like: torch.Tensor) -> torch.Tensor:
        """[B, 2] factors of the (MRI, PET) weights: (2 (1 - lambda), 2 lambda), or ones without lambda."""
        if pet_emphasis is None:
            return like.new_ones((batch, 2))
        lam = torch.as_tensor(pet_emphasis, dtype=like.dtype, device=like.device).reshape(-1).expand(batch)
        if bool(((lam < 0) | (lam > 1)).any()):
            raise ValueError(f"pet_emphasis must be in [0, 1], got {lam.tolist()}")
        return 2.0 * torch.stack([1.0 - lam, lam], dim=1)

    def forward(self, pred: torch.Tensor, target, pet_emphasis=None) -> torch.Tensor:
        if hasattr(target, "sources"):  # an EmphasisTarget from the conditioned training's prepare_batch
            target, pet_emphasis = target.sources, target.pet_emphasis
        if target.shape[1] != 2 or pred.shape[1] != 1:
            raise ValueError(
                f"expected pred [B,1,...] and target [B,2,...], got {tuple(pred.shape)}, {tuple(target.shape)}"
            )
        scale = self.source_scale(pet_emphasis, pred.shape[0], pred)

        def weighted(per_sample_source: torch.Tensor, weights: list[float]) -> torch.Tensor:
            # [B, 2] terms -> the batch mean of their weighted sum
            w = torch.tensor(weights, device=pred.device, dtype=pred.dtype) * scale
            return (per_sample_source * w).sum(dim=1).mean()

        # both sources in one call per term: F against the (MRI, PET) channels (F's own moments filtered once)
        repeated = pred.expand(-1, 2, *pred.shape[2:])
        loss = pred.new_zeros(())
        if any(self.ssim_weights):
            loss = loss + weighted(self.ssim(pred, target), self.ssim_weights)
        if any(self.ncc_weights):
            # MONAI's LNCC loss is -LNCC in [-1, 0]; 1 + it is >= 0 like the other terms
            loss = loss + weighted(1.0 + self.ncc(repeated, target).flatten(2).mean(dim=2), self.ncc_weights)
        if any(self.l1_weights):
            loss = loss + weighted(torch.abs(repeated - target).flatten(2).mean(dim=2), self.l1_weights)
        if any(self.lowpass_weights):
            # F and both sources low-passed in one filtering pass
            low = banded_separable_filtering(
                torch.cat([pred, target], dim=1), [self.lowpass_kernel] * self.spatial_dims
            )
            low = torch.abs(low[:, :1] - low[:, 1:]).flatten(2).mean(dim=2)
            loss = loss + weighted(low, self.lowpass_weights)
        if any(self.vif_weights):
            loss = loss + weighted(1.0 - self._vif(target, repeated), self.vif_weights)
        if self.gradient_weight:
            strongest = torch.maximum(
                self._gradient_magnitude(target[:, 0:1]), self._gradient_magnitude(target[:, 1:2])
            )
            loss = loss + self.gradient_weight * torch.mean(torch.abs(self._gradient_magnitude(pred) - strongest))
        return loss
