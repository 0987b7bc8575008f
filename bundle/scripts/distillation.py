"""Distillation of fixed-lambda networks into the one lambda-conditioned network.

Why: trained for one PET emphasis alone, the network reaches a better value of that lambda's objective than the
conditioned network does at the same lambda (``docs/report.md``, "Where the gap goes"), but a site would then need
one network per lambda. Here the conditioned network (the student) is trained on the usual unsupervised loss plus
an L1 pull towards what fixed-lambda networks (the teachers, TorchScript) output for the same patch: at a teacher's
lambda its output, between two teachers' lambdas their outputs blended linearly in lambda, and outside the
teachers' range nothing (the unsupervised loss alone), so that the whole range [0, 1] stays trained.

MONAI has no distillation loss; this is a wrapper around the bundle's ``FusionLoss`` (``configs/train_distill.json``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn

__all__ = ["TeacherDistillationLoss"]


class TeacherDistillationLoss(nn.Module):
    """``fusion_loss(pred, target) + weight * mean_b L1(pred_b, teacher_b)`` for the samples b whose lambda lies
    within the teachers' range.

    Args:
        fusion_loss: the unsupervised loss (``FusionLoss``), called as it is.
        teachers: {lambda: TorchScript file} of networks trained at that fixed lambda (``DCFBNet`` exports; each is
            run with its own lambda). At least one; lambdas in [0, 1].
        weight: the distillation term's weight.

    Shapes: ``pred`` [B, 1, *S]; ``target`` an ``EmphasisTarget`` (``scripts.conditioning``): ``sources`` [B, 2, *S]
    (the network's input) and ``pet_emphasis`` [B]. With a plain tensor target (no lambda) the loss is
    ``fusion_loss`` alone.
    """

    def __init__(self, fusion_loss: nn.Module, teachers: Mapping, weight: float = 10.0) -> None:
        super().__init__()
        if not teachers:
            raise ValueError("teachers: give at least one {lambda: TorchScript file}")
        pairs = sorted((float(lam), str(path)) for lam, path in teachers.items())
        for lam, path in pairs:
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"teacher lambda must be in [0, 1], got {lam} ({path})")
            if not os.path.isfile(path):  # refused when the config is parsed, not at the first training step
                raise ValueError(f"teacher {path} (lambda {lam}) does not exist")
        self.fusion_loss, self.weight = fusion_loss, float(weight)
        self.lambdas = [lam for lam, _ in pairs]
        self.paths = [path for _, path in pairs]
        # not submodules: the teachers are neither trained nor saved with the student's checkpoint
        self._teachers: list[torch.jit.ScriptModule] = []

    def teachers(self, device: torch.device) -> list[torch.jit.ScriptModule]:
        if not self._teachers or next(self._teachers[0].parameters()).device != device:
            self._teachers = []
            for path in self.paths:
                try:
                    teacher = torch.jit.load(path, map_location=device).eval()
                except (OSError, RuntimeError, ValueError) as err:
                    raise ValueError(f"teacher {path} cannot be read as a TorchScript model: {err}") from err
                for p in teacher.parameters():
                    p.requires_grad_(False)
                self._teachers.append(teacher)
        return self._teachers

    def teacher_output(self, image: torch.Tensor, lam: float) -> torch.Tensor | None:
        """What the teachers say for one sample ``image`` [1, 2, *S] at ``lam``: [1, 1, *S], or None outside their
        range."""
        lambdas = self.lambdas
        if lam < lambdas[0] - 1e-6 or lam > lambdas[-1] + 1e-6:
            return None
        teachers = self.teachers(image.device)

        def run(i: int) -> torch.Tensor:
            return teachers[i](image, torch.full((1,), lambdas[i], dtype=image.dtype, device=image.device))

        upper = next(i for i, t in enumerate(lambdas) if t >= lam - 1e-6)
        if abs(lambdas[upper] - lam) <= 1e-6 or upper == 0:
            return run(upper)
        lower = upper - 1
        share = (lam - lambdas[lower]) / (lambdas[upper] - lambdas[lower])
        return (1.0 - share) * run(lower) + share * run(upper)

    def forward(self, pred: torch.Tensor, target) -> torch.Tensor:
        loss = self.fusion_loss(pred, target)
        if not hasattr(target, "sources") or not self.weight:
            return loss
        terms = []
        with torch.no_grad():
            outputs = [
                self.teacher_output(target.sources[b : b + 1], float(target.pet_emphasis[b]))
                for b in range(pred.shape[0])
            ]
        for b, taught in enumerate(outputs):
            if taught is not None:
                terms.append(torch.abs(pred[b : b + 1] - taught.to(pred.dtype)).mean())
        if terms:
            loss = loss + self.weight * torch.stack(terms).sum() / pred.shape[0]
        return loss
