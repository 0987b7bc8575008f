"""Trade-off fronts: a method family scored along its trade-off parameter (the network's PET emphasis lambda, the
global blend's MRI share w), compared at matched operating points rather than at one point each.

A point is (mean SSIM, mean of another metric) over a split's cases. One front lies above another where, over
the range of SSIM that both cover, it reaches the higher value of the other metric.
"""

from __future__ import annotations

import numpy as np


def blend_method(mri_share: float):
    """F = w * MRI + (1 - w) * PET, the classical family the network is compared with."""

    def fuse(mri, pet):
        return mri_share * mri + (1.0 - mri_share) * pet

    return fuse


def family_points(summary: dict, prefix: str) -> list[tuple[float, dict]]:
    """(parameter, means) of the methods named ``<prefix>@<parameter>`` in an evaluate summary, sorted."""
    points = []
    for name, values in summary.items():
        if name.startswith(prefix + "@"):
            points.append((float(name.split("@", 1)[1]), {k: v["mean"] for k, v in values.items() if k != "n"}))
    return sorted(points, key=lambda p: p[0])


def interpolate_front(points: list[dict], x: str, y: str, at: np.ndarray) -> np.ndarray:
    """The upper envelope of a front's y at the x values ``at``, linear between its points; NaN outside them."""
    xs = np.array([p[x] for p in points], dtype=float)
    ys = np.array([p[y] for p in points], dtype=float)
    out = np.full(len(at), np.nan)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    for i, value in enumerate(at):
        if xs[0] <= value <= xs[-1]:
            # the front may fold back (two ys at one x): take the best y among the segments that cover x
            best = -np.inf
            for j in range(len(xs) - 1):
                a, b = xs[j], xs[j + 1]
                if min(a, b) <= value <= max(a, b):
                    t = 0.0 if a == b else (value - a) / (b - a)
                    best = max(best, ys[j] + t * (ys[j + 1] - ys[j]))
            out[i] = best if np.isfinite(best) else np.nan
    return out


def dominating_blends(point: dict, blends: list[dict], x: str, y: str) -> list[int]:
    """Indices of the blends at least as good as ``point`` on both ``x`` and ``y`` (higher is better)."""
    return [i for i, b in enumerate(blends) if b[x] >= point[x] and b[y] >= point[y]]


def choose_emphasis(points: list[tuple[float, dict]], min_corr: float = 0.95, min_kept: float = 0.70):
    """The rule for the default lambda: the highest mean SSIM among the lambdas whose regional r is at least
    ``min_corr`` and whose contrast kept is at least ``min_kept`` (contrast kept exists only where a split has
    Alzheimer-like cases; without them that condition is void); None when no lambda qualifies."""
    eligible = [(lam, p) for lam, p in points
                if p.get("regional_corr") is not None and p["regional_corr"] >= min_corr
                and (p.get("contrast_kept") is None or p["contrast_kept"] >= min_kept)]
    return max(eligible, key=lambda lp: lp[1]["ssim"])[0] if eligible else None
