"""Classical image-fusion baselines in 3D, on the network's inputs (MRI and PET on one grid, each in [0, 1]).

Each method takes ``a`` (MRI) and ``b`` (PET), float tensors of one spatial shape (2D or 3D), and returns the
fused image of that shape in [0, 1]. They are the methods the field compares against; the pyramid and wavelet
fusions keep the larger-magnitude detail coefficient and average the coarsest band, the rule most papers use.
"""

from __future__ import annotations

import numpy as np
import pywt
import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering


def average_fusion(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F = (A + B) / 2."""
    return (a + b) / 2


def maximum_fusion(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F = max(A, B), voxel by voxel."""
    return torch.maximum(a, b)


def pca_fusion(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """F = w_A A + w_B B with (w_A, w_B) the principal eigenvector of the 2x2 covariance of (A, B), normalised to
    sum 1 (Naidu, Raol, "Pixel-level image fusion using wavelets and principal component analysis", Def. Sci. J.
    58 (2008) 338)."""
    data = torch.stack([a.flatten(), b.flatten()]).double()
    _, vectors = torch.linalg.eigh(torch.cov(data))
    principal = vectors[:, -1].abs()
    w = principal / principal.sum()
    return (w[0] * a.double() + w[1] * b.double()).to(a.dtype)


_BURT_KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _reduce(x: torch.Tensor) -> torch.Tensor:
    smooth = separable_filtering(x[None, None], [_BURT_KERNEL.to(x)] * x.ndim, mode="replicate")[0, 0]
    return smooth[(slice(None, None, 2),) * x.ndim]


def _expand(x: torch.Tensor, shape) -> torch.Tensor:
    mode = "trilinear" if x.ndim == 3 else "bilinear"
    return F.interpolate(x[None, None], size=tuple(shape), mode=mode, align_corners=False)[0, 0]


def laplacian_pyramid_fusion(a: torch.Tensor, b: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian pyramids (Burt, Adelson, IEEE Trans. Commun. 31 (1983) 532) of both images, 5-tap Burt kernel
    in every axis; detail levels fused by the larger absolute value, the coarsest level averaged (Burt,
    Kolczynski, ICCV 1993); then collapsed."""
    def pyramid(x):
        bands = []
        for _ in range(levels):
            smaller = _reduce(x)
            bands.append(x - _expand(smaller, x.shape))
            x = smaller
        return bands, x

    bands_a, base_a = pyramid(a.float())
    bands_b, base_b = pyramid(b.float())
    fused = (base_a + base_b) / 2
    for da, db in zip(reversed(bands_a), reversed(bands_b)):
        fused = _expand(fused, da.shape) + torch.where(da.abs() >= db.abs(), da, db)
    return fused.clamp(0, 1).to(a.dtype)


def wavelet_fusion(a: torch.Tensor, b: torch.Tensor, wavelet: str = "db2", levels: int = 3) -> torch.Tensor:
    """Discrete wavelet fusion (Li, Manjunath, Mitra, Graph. Models Image Process. 57 (1995) 235) with PyWavelets'
    n-dimensional transform: approximation averaged, detail coefficients by the larger absolute value."""
    ca = pywt.wavedecn(a.double().cpu().numpy(), wavelet, level=levels, mode="symmetric")
    cb = pywt.wavedecn(b.double().cpu().numpy(), wavelet, level=levels, mode="symmetric")
    fused = [(ca[0] + cb[0]) / 2]
    for da, db in zip(ca[1:], cb[1:]):
        fused.append({k: np.where(np.abs(da[k]) >= np.abs(db[k]), da[k], db[k]) for k in da})
    out = pywt.waverecn(fused, wavelet, mode="symmetric")
    out = out[tuple(slice(0, s) for s in a.shape)]
    return torch.from_numpy(np.clip(out, 0, 1)).to(a)


CLASSICAL_METHODS = {
    "average": average_fusion,
    "maximum": maximum_fusion,
    "pca": pca_fusion,
    "laplacian_pyramid": laplacian_pyramid_fusion,
    "wavelet": wavelet_fusion,
}
