"""Where does each fusion sit between its two sources? The report's PSNR, SSIM and VIF are a mean or a sum
over (MRI, PET); this splits them per source and adds the global least-squares MRI share
w = <F - PET, MRI - PET> / |MRI - PET|^2 (the w of the global blend nearest to F) and the share of F's
difference from that blend, |F - PET - w (MRI - PET)|^2 / |MRI - PET|^2. All inside the head mask, on each
MRI's own grid, with the evaluation's pipeline.

    .venv/bin/python scripts/fusion_eval.py breakdown --dataset_dir data/cohort --split validation \
        --models dcfb_3d=bundle/models/model.ts --models_2d dcfb_2d=runs/comparison/dcfb_2d/model.ts

Two fusions with the same w can still differ in whose local structure they keep: SSIM and VIF against each
source say which. Prints a markdown table of the means over the cases; --baselines adds classical methods.
``--measures share`` scores only the MRI share and the distance from the blend family (seconds per case instead of
minutes: no VIF), e.g. to see whether a network's operating point drifts between two test sets.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from .comparison import BundlePipeline, methods_from_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COLUMNS = ("mri_share", "off_blend", "psnr_mri", "psnr_pet", "ssim_mri", "ssim_pet", "vif_mri", "vif_pet")
SHARE_COLUMNS = ("mri_share", "mri_share_sd", "off_blend")


def breakdown(f: torch.Tensor, mri: torch.Tensor, pet: torch.Tensor, mask: torch.Tensor,
              per_source: bool = True) -> dict[str, float]:
    """Per-source scores of F [*S] against the MRI and the PET [*S] inside ``mask`` [*S] (bool); with
    ``per_source`` False only the MRI share and the distance from the blend family."""
    from scripts.fusion_measures import masked_psnr, masked_ssim, visual_information_fidelity

    difference = (mri - pet).double()[mask]
    spread = float((difference * difference).sum())
    if spread == 0.0:
        raise ValueError("the MRI and the PET are identical in the head mask: no balance to measure")
    away = (f - pet).double()[mask]
    share = float((away * difference).sum()) / spread
    placed = {"mri_share": share, "off_blend": float(((away - share * difference) ** 2).sum()) / spread}
    if not per_source:
        return placed
    return {
        **placed,
        "psnr_mri": float(masked_psnr(f, mri, mask)), "psnr_pet": float(masked_psnr(f, pet, mask)),
        "ssim_mri": float(masked_ssim(f, mri, mask)), "ssim_pet": float(masked_ssim(f, pet, mask)),
        "vif_mri": float(visual_information_fidelity(mri, f, mask)),
        "vif_pet": float(visual_information_fidelity(pet, f, mask)),
    }


def main(dataset_dir: str, split: str = "validation", models: str = "", models_2d: str = "", baselines: str = "none",
         max_cases: int = 0, measures: str = "all", bundle_dir: str = os.path.join(ROOT, "bundle")) -> str:
    """Break down each method's scores per source on ``split``; return the markdown table (fire prints it).
    ``measures``: ``all``, or ``share`` (the MRI share, its standard deviation over the cases, and the distance
    from the blend family)."""
    if measures not in ("all", "share"):
        raise ValueError(f"--measures must be 'all' or 'share', got {measures!r}")
    columns = COLUMNS if measures == "all" else SHARE_COLUMNS
    pipeline = BundlePipeline(bundle_dir)  # puts the bundle, and so its ``scripts`` package, on the path
    methods = methods_from_flags(pipeline, models, models_2d, baselines)
    if not methods:
        raise ValueError("nothing to score: give --models, --models_2d or --baselines")
    from scripts.data import load_fusion_datalist

    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)
    items = items[:max_cases] if max_cases else items
    rows: dict[str, list[dict]] = {name: [] for name in methods}
    for item in tqdm(items, desc="cases", unit="case"):
        for name, _, f, sources, _ in pipeline.fused_cases(item, methods):
            mask = pipeline.head_mask(sources[0])
            try:
                scores = breakdown(f[0, 0], sources[0, 0], sources[0, 1], mask, per_source=measures == "all")
            except ValueError as error:
                raise ValueError(f"{item['mri']}: {error}") from error
            rows[name].append(scores)
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scored in rows.items():
        values = {c: float(np.mean([r[c] for r in scored])) for c in scored[0]}
        values["mri_share_sd"] = float(np.std([r["mri_share"] for r in scored]))
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)

