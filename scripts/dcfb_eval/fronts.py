"""Trade-off fronts: a method family scored along its trade-off parameter (the network's PET emphasis lambda, the
global blend's MRI share w), compared at matched operating points rather than at one point each.

A point is (mean SSIM, mean of another metric) over a split's cases. One front lies above another where, over
the range of SSIM that both cover, it reaches the higher value of the other metric.

``main`` scores the network over lambda and the global blends over w on a datalist split, with the evaluation's
pipeline, and picks the default lambda by a stated rule:

    .venv/bin/python scripts/fusion_eval.py fronts --dataset_dir data/cohort --split validation \
        --model dcfb_3d=bundle/models/model.ts --emphases 0.1,0.3,0.5,0.7,0.9 --shares 0,0.2,0.4,0.5,0.6,0.8,1 \
        --output_dir runs/fronts_val

Writes ``per_case.csv`` and ``summary.json`` (methods ``<model>@<lambda>`` and ``blend@<w>``), ``fronts.png``
(SSIM against regional r, VIF and PSNR, one line per family) and ``fronts.md``: the points, whether any blend is
at least as good as each network point on SSIM and regional r, and the lambda the rule picks (highest SSIM with
r >= 0.95 and contrast kept >= 0.70).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
from tqdm import tqdm

from .comparison import BundlePipeline, parse_models, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAIRS = (("ssim", "regional_corr"), ("ssim", "vif"), ("ssim", "psnr"))


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



def fraction_list(spec, name: str) -> list[float]:
    """``--name 0,0.5,1`` as numbers in [0, 1]; ValueError naming the flag otherwise. fire hands "0,0.5" over as a
    tuple of numbers and "0.5" as one number (and a name-list parser would drop a 0)."""
    values = spec.split(",") if isinstance(spec, str) else list(spec) if isinstance(spec, (tuple, list)) else [spec]
    try:
        numbers = [float(v) for v in values if str(v).strip() != ""]
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be numbers separated by commas, got {spec!r}") from None
    if not numbers or any(not 0.0 <= v <= 1.0 for v in numbers):
        raise ValueError(f"--{name} must lie in [0, 1], got {spec!r}")
    return numbers


def plot_fronts(summary: dict, families: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PAIRS), figsize=(5 * len(PAIRS), 4.2))
    for ax, (x, y) in zip(axes, PAIRS):
        for family in families:
            points = family_points(summary, family)
            ax.plot([p[x] for _, p in points], [p[y] for _, p in points], "o-" if family == "blend" else "s-",
                    label=family + (" (MRI share w)" if family == "blend" else " (PET emphasis lambda)"))
            for param, p in points:
                ax.annotate(f"{param:g}", (p[x], p[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("SSIM (mean of F vs MRI and F vs PET)")
        ax.set_ylabel({"regional_corr": "regional PET pattern r", "vif": "VIF (sum over sources)",
                       "psnr": "PSNR (mean of the two), dB"}[y])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def fronts_markdown(summary: dict, model_names: list[str], split: str, n_cases: int) -> str:
    blends = [p for _, p in family_points(summary, "blend")]
    lines = [f"Fronts on the {split} split ({n_cases} cases), means over cases.", ""]
    for family in ["blend", *model_names]:
        lines += [f"### {family}", "", "| parameter | SSIM | regional r | contrast kept | VIF | PSNR |"
                  + (" blends at least as good on SSIM and r |" if family != "blend" else ""),
                  "|---|---|---|---|---|---|" + ("---|" if family != "blend" else "")]
        for param, p in family_points(summary, family):
            row = (f"| {param:g} | {_cell(p['ssim'], '.4f')} | {_cell(p.get('regional_corr'), '.3f')} | "
                   f"{_cell(p.get('contrast_kept'), '.3f')} | {_cell(p['vif'], '.4f')} | {_cell(p['psnr'], '.2f')} |")
            if family != "blend":
                better = dominating_blends(p, blends, "ssim", "regional_corr")
                row += (" none |" if not better else
                        " " + ", ".join(f"w={family_points(summary, 'blend')[i][0]:g}" for i in better) + " |")
            lines.append(row)
        if family != "blend":
            chosen = choose_emphasis(family_points(summary, family))
            lines += ["", "Default by the rule (highest SSIM with r >= 0.95 and contrast kept >= 0.70): "
                      + (f"lambda = {chosen:g}" if chosen is not None else "no lambda qualifies")]
            best_blend = max(blends, key=lambda b: b["ssim"])
            lines.append(f"Best global blend by SSIM: {best_blend['ssim']:.4f} "
                         f"(r {_cell(best_blend.get('regional_corr'), '.3f')}).")
        lines.append("")
    return "\n".join(lines)


def reused_rows(reuse_dir: str, case_ids: list[str]) -> list[dict]:
    """The per-case rows of an earlier fronts run (its ``per_case.csv``), which must hold the same cases."""
    path = os.path.join(reuse_dir, "per_case.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--reuse {reuse_dir}: no per_case.csv there")
    with open(path, newline="") as f:
        rows = [{k: (v if k in ("case", "pattern", "method") else float(v) if v != "" else float("nan"))
                 for k, v in row.items()} for row in csv.DictReader(f)]
    if sorted({r["case"] for r in rows}) != sorted(case_ids):
        raise ValueError(f"--reuse {reuse_dir}: its cases {sorted({r['case'] for r in rows})} are not this run's "
                         f"{sorted(case_ids)}")
    return rows


def main(dataset_dir: str, output_dir: str, model: str = "", models_2d: str = "", split: str = "validation",
         emphases: str = "0.1,0.3,0.5,0.7,0.9", shares: str = "0,0.2,0.4,0.5,0.6,0.8,1", max_cases: int = 0,
         windows: int = 0, reuse: str = "", bundle_dir: str = os.path.join(ROOT, "bundle")) -> str:
    """Score every lambda of each ``model`` (3D, ``name=path.ts[,...]``) and ``models_2d`` (2D, applied slice by
    slice) and every blend share; returns fronts.md's path. ``reuse``: an earlier fronts run's folder on the same
    cases, whose methods are taken from its ``per_case.csv`` unless scored again here (e.g. add a 2D variant to the
    3D network's and the blends' fronts without scoring those again); ``--shares ''`` then scores no blend."""
    lams = fraction_list(emphases, "emphases")
    ws = fraction_list(shares, "shares") if shares not in ("", None) or not reuse else []
    models, flat = parse_models(model), parse_models(models_2d)
    if not models and not flat:
        raise ValueError("--model (or --models_2d): give name=path.ts")
    for name, path in {**models, **flat}.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model {name}: file not found: {path}")
    pipeline = BundlePipeline(bundle_dir, windows)
    pipeline.keep_metrics(["ssim", "vif", "psnr"])
    from scripts.data import load_fusion_datalist

    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)
    items = items[:max_cases] if max_cases else items
    methods = {f"blend@{w:g}": blend_method(w) for w in ws}
    for spatial_dims, group in ((3, models), (2, flat)):
        for name, path in group.items():
            for lam in lams:
                methods[f"{name}@{lam:g}"] = pipeline.torchscript_method(path, spatial_dims, pet_emphasis=lam)
    rows = []
    if reuse:
        earlier = reused_rows(reuse, [os.path.basename(str(item["id"])) for item in items])
        rows.extend(r for r in earlier if r["method"] not in methods)
    for item in tqdm(items, desc="cases", unit="case"):
        rows.extend(pipeline.score_case(item, methods))
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "per_case.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump({"split": split, "cases": len(items), "methods": summary}, f, indent=2)
    families = list(dict.fromkeys(name.split("@", 1)[0] for name in summary))
    networks = [f for f in families if f != "blend"]
    plot_fronts(summary, ["blend", *networks], os.path.join(output_dir, "fronts.png"))
    text = fronts_markdown(summary, networks, split, len(items))
    path = os.path.join(output_dir, "fronts.md")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    return path

