"""Methods trained with several seeds, compared as groups: mean and spread over the seeds, at each PET emphasis.

    .venv/bin/python scripts/fusion_eval.py seeds --summary runs/seeds/fronts_test/summary.json \
        --groups "3D=s1_3d,s2_3d,s123_3d;2D=s1_2d,s2_2d,s123_2d" --output runs/seeds/seeds_test.md

Reads the ``summary.json`` of a ``fronts`` run (methods ``<model>@<lambda>``); for each group and lambda, the mean
over the group's seeds of each metric's case mean, and the seeds' standard deviation; then, per lambda, the
difference between the first two groups with the seeds' spread beside it, so that a difference smaller than the
spread reads as no difference. Writes a markdown table and prints it.
"""

from __future__ import annotations

import json

import numpy as np

METRICS = ("ssim", "regional_corr", "contrast_kept", "vif", "psnr")


def parse_groups(spec: str) -> dict[str, list[str]]:
    """``name=a,b,c;name2=d,e`` as a dict."""
    groups = {}
    for part in spec.split(";"):
        if part.strip():
            name, members = part.split("=", 1)
            groups[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    if len(groups) < 1 or any(len(m) < 2 for m in groups.values()):
        raise ValueError("--groups: give name=model,model[,...];name=... with at least two seeds per group")
    return groups


def group_table(methods: dict, groups: dict[str, list[str]]) -> tuple[list[float], dict]:
    """lambdas, and {(group, lambda, metric): (mean over seeds, std over seeds)}."""
    lams = sorted({float(name.split("@", 1)[1]) for name in methods if "@" in name and not name.startswith("blend@")})
    table = {}
    for group, members in groups.items():
        for lam in lams:
            for metric in METRICS:
                values = [methods.get(f"{m}@{lam:g}", {}).get(metric, {}).get("mean") for m in members]
                values = np.array([v for v in values if v is not None], dtype=float)
                if len(values):
                    table[(group, lam, metric)] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return lams, table


def markdown(summary: dict, groups: dict[str, list[str]]) -> str:
    lams, table = group_table(summary["methods"], groups)
    names = list(groups)
    lines = [f"Split {summary.get('split')}, {summary.get('cases')} cases; mean over seeds ± standard deviation over "
             f"seeds ({', '.join(f'{g}: {len(m)} seeds' for g, m in groups.items())}).", "",
             "| group | lambda | " + " | ".join(METRICS) + " |", "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for group in names:
        for lam in lams:
            cells = [f"{table[(group, lam, m)][0]:.4f} ± {table[(group, lam, m)][1]:.4f}" if (group, lam, m) in table
                     else "-" for m in METRICS]
            lines.append(f"| {group} | {lam:g} | " + " | ".join(cells) + " |")
    if len(names) >= 2:
        a, b = names[:2]
        lines += ["", f"{a} minus {b} (the larger of the two groups' seed spreads beside it):", "",
                  "| lambda | " + " | ".join(METRICS) + " |", "| --- | " + " | ".join("---" for _ in METRICS) + " |"]
        for lam in lams:
            cells = []
            for m in METRICS:
                if (a, lam, m) in table and (b, lam, m) in table:
                    diff = table[(a, lam, m)][0] - table[(b, lam, m)][0]
                    spread = max(table[(a, lam, m)][1], table[(b, lam, m)][1])
                    cells.append(f"{diff:+.4f} (±{spread:.4f})")
                else:
                    cells.append("-")
            lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(summary: str, groups: str, output: str = "") -> str:
    with open(summary) as f:
        data = json.load(f)
    text = markdown(data, parse_groups(groups))
    if output:
        with open(output, "w") as f:
            f.write(text)
    print(text)
    return text
