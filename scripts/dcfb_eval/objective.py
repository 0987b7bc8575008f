"""The training objective as a yardstick: its value for the best global blend of the sources, for a network, and
for the per-subject optimum (the fused image optimised directly), and the fraction of the blend-to-optimum gap
that the network closes.

Everything is computed on one cube of the MRI's own grid (the sources as the network saw them, mapped back with
the bundle's ``Invertd``), so the three fused images are judged by the same objective on the same voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm import trange


def objective_value(loss_fn, fused: torch.Tensor, sources: torch.Tensor, pet_emphasis: float) -> float:
    """``loss_fn`` (a ``FusionLoss``) at lambda = ``pet_emphasis``: F [*S], sources [2, *S]."""
    with torch.no_grad():
        return float(loss_fn(fused[None, None], sources[None], pet_emphasis))


def best_global_blend(loss_fn, sources: torch.Tensor, pet_emphasis: float, tolerance: float = 1e-3):
    """The MRI share w of ``w * MRI + (1 - w) * PET`` that minimises the objective, by golden-section search on
    [0, 1] after a coarse grid (the objective is smooth in w; the grid guards against a second minimum).
    Returns (w, objective, F)."""

    def value(w: float) -> float:
        return objective_value(loss_fn, w * sources[0] + (1 - w) * sources[1], sources, pet_emphasis)

    grid = [i / 10 for i in range(11)]
    best = min(range(len(grid)), key=lambda i: value(grid[i]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (5**0.5 - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = value(a), value(b)
    while high - low > tolerance:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = value(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = value(b)
    w = (low + high) / 2
    return w, value(w), w * sources[0] + (1 - w) * sources[1]


@dataclass
class Optimum:
    fused: torch.Tensor
    value: float
    iterations: int
    converged: bool
    last_window_gain: float  # relative decrease of the objective over the last ``window`` iterations
    history: list = field(default_factory=list)


def per_subject_optimum(loss_fn, sources: torch.Tensor, pet_emphasis: float, start: torch.Tensor,
                        lr: float = 0.01, window: int = 50, tolerance: float = 2e-4, max_iterations: int = 2000,
                        progress: bool = True) -> Optimum:
    """Minimise the objective over F itself (every voxel free, clipped to [0, 1]) with Adam from ``start``.

    Converged when the best value fell by less than ``tolerance`` (relative) over the last ``window`` iterations;
    otherwise it stops at ``max_iterations`` and says so (``converged`` False)."""
    fused = start.detach().clone()[None, None].requires_grad_(True)
    target = sources[None]
    optimizer = torch.optim.Adam([fused], lr=lr)
    best_value, best = float("inf"), fused.detach().clone()
    history: list[float] = []
    bar = trange(max_iterations, desc="optimising F", unit="step", leave=False, disable=not progress)
    converged = False
    for step in bar:
        optimizer.zero_grad()
        loss = loss_fn(fused, target, pet_emphasis)
        loss.backward()
        value = loss.item()
        history.append(value)
        if value < best_value:
            best_value, best = value, fused.detach().clone()
        optimizer.step()
        with torch.no_grad():
            fused.clamp_(0, 1)
        if step >= window and (min(history[:-window]) - best_value) < tolerance * abs(best_value):
            converged = True
            break
        if step % 25 == 0:
            bar.set_postfix(objective=f"{best_value:.5f}")
    gain = (min(history[:-window]) - best_value) / abs(best_value) if len(history) > window else float("nan")
    final = objective_value(loss_fn, best[0, 0], sources, pet_emphasis)
    return Optimum(best[0, 0], final, len(history), converged, gain, history)


def gap_closed(blend: float, network: float, optimum: float) -> float:
    """The fraction of the objective gap between the best global blend and the optimum that the network closes:
    1 at the optimum, 0 at the blend, negative when worse than the blend."""
    gap = blend - optimum
    return float("nan") if gap <= 0 else (blend - network) / gap
