"""Compare fusion methods on a datalist split: the classical baselines and any TorchScript models, every
metric of the bundle inside the head mask, on each MRI's own grid; per-case CSV and a JSON summary.

    .venv/bin/python scripts/fusion_eval.py compare --dataset_dir data/cohort --split testing \
        --models dcfb_3d=bundle/models/model.ts [--models_2d dcfb_2d=model_2d.ts] --output_dir runs/eval
Add models to an earlier comparison without scoring the rest again:
    ... --baselines none --models no_cross_attention=runs/comparison/no_cross_attention/model.ts --merge
"""

from __future__ import annotations

import csv
import json
import os

from tqdm import tqdm

from .comparison import BundlePipeline, methods_from_flags, parse_names, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read_row(row: dict) -> dict:
    """A per_case.csv row with its scores as floats (an empty cell, a metric not computed, as NaN)."""
    return {k: v if k in ("case", "pattern", "method") else float(v or "nan") for k, v in row.items()}


def main(dataset_dir: str, output_dir: str, split: str = "testing", bundle_dir: str = os.path.join(ROOT, "bundle"),
         models: str = "", models_2d: str = "", max_cases: int = 0, baselines: str = "all",
         merge: bool = False, metrics: str = "all", windows: int = 0) -> str:
    """Score every method on ``split``; ``models`` (3D) and ``models_2d`` (2D, applied slice by slice) are
    ``name=path.ts[,name=path.ts]``; ``baselines`` the classical methods to run (``all``, ``none`` or
    ``average,pca,...``). With ``merge``, rows of other methods already in ``output_dir/per_case.csv`` are
    kept (those of the methods scored now are replaced) and the summary covers them all. ``metrics``: ``all``
    or a subset such as ``psnr,ssim,qabf,vif`` (the regional pattern is always scored). Returns the summary
    path."""
    pipeline = BundlePipeline(bundle_dir, windows)
    if metrics != "all":
        try:
            pipeline.keep_metrics(parse_names(metrics))
        except ValueError as error:
            raise ValueError(f"--metrics: {error}") from error
    from scripts.data import load_fusion_datalist

    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)
    items = items[:max_cases] if max_cases else items
    methods = methods_from_flags(pipeline, models, models_2d, baselines)
    csv_path = os.path.join(output_dir, "per_case.csv")
    rows = []
    if merge and os.path.isfile(csv_path):
        with open(csv_path, newline="") as f:
            rows = [_read_row(r) for r in csv.DictReader(f) if r["method"] not in methods]
    for item in tqdm(items, desc="cases", unit="case"):
        rows.extend(pipeline.score_case(item, methods))
    os.makedirs(output_dir, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    summary_path = os.path.join(output_dir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump({"split": split, "cases": len(items), "methods": summarize(rows)}, f, indent=2)
    for method, values in summarize(rows).items():
        print(f"{method:>18}: " + "  ".join(f"{k} {v['mean']:.3f}" for k, v in values.items()
                                              if k != "n" and v["mean"] is not None))
    return summary_path

