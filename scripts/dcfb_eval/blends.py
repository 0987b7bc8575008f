"""How do the fusion metrics respond to the balance between the sources? Score global blends
F = w * MRI + (1 - w) * PET for a range of MRI shares w, with the evaluation's own pipeline and metrics.

    .venv/bin/python scripts/fusion_eval.py blends --dataset_dir data/cohort --split validation --max_cases 1 \
        --weights 0,0.1,0.25,0.4,0.5,0.6,0.75,0.9,1 --metrics psnr,ssim,vif,qabf

No network: this shows where each metric puts its optimum. A metric that peaks at a balanced blend (SSIM, the
mean of F against each source) and one that bottoms out there (PSNR as the mean of the two PSNRs, VIF summed
over the sources) cannot both be won by moving along the balance; only a better fusion at a given balance
wins both. Prints a markdown table of the means over the cases.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .comparison import BundlePipeline, parse_names
from .fronts import blend_method, fraction_list

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(dataset_dir: str, split: str = "validation", max_cases: int = 1, weights: str = "0,0.25,0.5,0.75,1",
         metrics: str = "psnr,ssim,vif", bundle_dir: str = os.path.join(ROOT, "bundle")) -> str:
    """Score each blend on the first ``max_cases`` cases of ``split``; return the markdown table (fire prints it)."""
    shares = fraction_list(weights, "weights")
    pipeline = BundlePipeline(bundle_dir)
    wanted = parse_names(metrics)
    try:
        pipeline.keep_metrics(wanted)
    except ValueError as error:
        raise ValueError(f"--metrics: {error}") from error
    from scripts.data import load_fusion_datalist

    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)[:max_cases]
    methods = {f"{w:g}": blend_method(w) for w in shares}
    rows = []
    for item in items:
        rows += pipeline.score_case(item, methods)
        print(f"fusion_eval blends: {os.path.basename(str(item['id']))} scored", file=sys.stderr)
    lines = ["| MRI share w | " + " | ".join(wanted) + " |", "|---" * (len(wanted) + 1) + "|"]
    for name in methods:
        means = [np.mean([r[m] for r in rows if r["method"] == name]) for m in wanted]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)

