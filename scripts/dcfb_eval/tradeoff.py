"""Where runs of a loss-weight sweep land against two metrics (e.g. SSIM against VIF), one line per network:
the picture that tells a better network from one that sits at another point of the same trade-off.

    .venv/bin/python scripts/fusion_eval.py tradeoff --output bundle/docs/images/tradeoff.png --x ssim --y vif \
        --points "3D@0=runs/eval_val/summary.json:dcfb_3d;2D@0=runs/eval_val/summary.json:dcfb_2d;..."

``points``: ``series@weight=summary.json:method`` separated by ``;`` (``summary.json`` as written by
``fusion_eval.py compare``). Prints a markdown table of every point (PSNR, SSIM, VIF, Qabf, regional pattern).
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TABLE_KEYS = ("psnr", "ssim", "vif", "qabf", "regional_corr", "contrast_kept")


def parse_points(spec: str) -> list[dict]:
    """``series@weight=path:method;...`` as a list of {series, weight, path, method}, in the order given."""
    points = []
    for entry in (e.strip() for e in str(spec).split(";")):
        if not entry:
            continue
        try:
            label, source = entry.split("=", 1)
            series, weight = label.split("@", 1)
            path, method = source.rsplit(":", 1)
            points.append({"series": series, "weight": float(weight), "path": path, "method": method})
        except ValueError as error:
            raise ValueError(f"point '{entry}': expected series@weight=summary.json:method ({error})") from None
    return points


def main(points: str, output: str, x: str = "ssim", y: str = "vif") -> str:
    """Draw ``y`` against ``x`` for every point, a line per series in weight order; print the table."""
    if x not in TABLE_KEYS or y not in TABLE_KEYS:
        raise ValueError(f"--x and --y must be among {list(TABLE_KEYS)}, got {x!r} and {y!r}")
    try:
        parsed = parse_points(points)
    except ValueError as error:
        raise ValueError(f"--points: {error}")
    rows = []
    for point in parsed:
        if not os.path.isfile(point["path"]):
            raise ValueError(f"{point['path']}: file not found")
        methods = json.load(open(point["path"]))["methods"]
        if point["method"] not in methods:
            raise ValueError(f"{point['path']}: no method '{point['method']}' (has {sorted(methods)})")
        rows.append({**point, **{k: methods[point["method"]].get(k, {}).get("mean") for k in TABLE_KEYS}})
        if rows[-1][x] is None or rows[-1][y] is None:
            raise ValueError(f"{point['path']}: method '{point['method']}' has no {x} or no {y}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for series in dict.fromkeys(r["series"] for r in rows):
        line = sorted((r for r in rows if r["series"] == series), key=lambda r: r["weight"])
        ax.plot([r[x] for r in line], [r[y] for r in line], "o-", label=series)
        for r in line:
            ax.annotate(f"{r['weight']:g}", (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=x.upper(), ylabel=y.upper(), title=f"{y.upper()} against {x.upper()} (labels: loss weight)")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)
    print("| series | weight | " + " | ".join(TABLE_KEYS) + " |")
    print("|---|---|" + "---|" * len(TABLE_KEYS))
    for r in rows:
        cells = ["" if r[k] is None else f"{r[k]:.3f}" for k in TABLE_KEYS]
        print(f"| {r['series']} | {r['weight']:g} | " + " | ".join(cells) + " |")
    return output

