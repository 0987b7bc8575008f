"""Write the evaluation report (markdown and pictures) from an ``fusion_eval.py compare`` run.

    .venv/bin/python scripts/fusion_eval.py report --eval_dir runs/eval --dataset_dir data/cohort \
        --models dcfb_3d=bundle/models/model.ts --train_log runs/release/train.log --output_dir bundle/docs

Writes ``report.md`` and ``images/`` (metric chart, tri-planar views of a normal and an Alzheimer-like
test subject for every method with a PET colour overlay, training curve when a log is given). ``views`` writes
only the tri-planar pictures, e.g. of one network at three PET emphases:

    .venv/bin/python scripts/fusion_eval.py views --dataset_dir data/cohort --output_dir bundle/docs/images \
        --models "dcfb_3d@0.5=bundle/models/model.ts,dcfb_3d@0.3=bundle/models/model.ts" --suffix _lambda
"""

from __future__ import annotations

import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .comparison import BundlePipeline, methods_from_flags, parse_models, parse_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "en": "EN (bits)", "sd": "SD", "sf": "SF", "ag": "AG",
                 "mi": "MI (bits)", "nmi": "NMI", "fmi": "FMI (pixel)", "scd": "SCD", "vif": "VIF", "qabf": "Qabf",
                 "regional_corr": "regional r", "contrast_kept": "contrast kept", "seconds": "s / volume"}

HOW_TO_READ = """## How to read these numbers

- PSNR and SSIM are the paper's metrics, here over the whole head (not one slice): the mean of F against
  the MRI and F against the PET. Neither form of PSNR-against-both says that a fusion is good. Plain
  averaging minimises the summed squared error to both sources, so a PSNR computed from that sum favours
  it by construction. The paper's form, the mean of the two PSNRs, favours the opposite: a fusion that is
  close to one source (a copy of the MRI scores without bound against the MRI, and among global blends
  w*MRI + (1-w)*PET averaging is the worst). So read PSNR only next to SSIM and the regional pattern:
  a model that wins PSNR by copying the MRI shows it as a low regional r.
- EN, SD, SF and AG describe F alone (information, contrast, detail); they reward noise as much as
  structure and have no ceiling that means "perfect".
- MI, NMI, SCD, VIF and Qabf measure what F keeps of the sources: information, correlations of
  differences, visual information (summed over the two sources) and edges (0.975 is the ceiling with the
  standard constants). VIF summed over the sources behaves like the paper's PSNR: lowest for a balanced
  blend of the sources and highest for a copy of either (`scripts/fusion_eval.py blends`), while SSIM peaks near
  the balance. So a method can gain PSNR and VIF by losing SSIM; compare methods at equal SSIM, or read the
  three together.
- Regional r and contrast kept are the clinical check: the correlation between F's and the PET's mean in
  the simulated Alzheimer target and reference regions, and the share of the PET's hypometabolism contrast
  that survives in F (Alzheimer-like subjects only). A fusion that looks good but loses these would hide
  the finding the PET was taken for.
"""


def read_training_logs(log_paths: list[str]) -> tuple[list[float], list[tuple[int, float, float]]]:
    """Loss per iteration and (epoch, PSNR, SSIM) per validation from bundle training logs; several logs
    (stages, each starting from the last one's checkpoint) follow one another, their epochs counted on."""
    losses, vals, epochs_before = [], [], 0
    for log_path in log_paths:
        text = open(log_path, errors="replace").read()
        losses += [float(v) for v in re.findall(r"train_loss: (-?[0-9.]+)", text)]
        vals += [(epochs_before + int(e), float(p), float(s)) for e, p, s in
                 re.findall(r"Epoch\[(\d+)\] Metrics -- val_fusion_psnr: ([0-9.]+) val_fusion_ssim: ([0-9.]+)", text)]
        epochs_before += max((int(n) for n in re.findall(r"Epoch: \d+/(\d+), Iter", text)), default=0)
    return losses, vals


def training_curve(log_paths: list[str], out_png: str) -> bool:
    losses, vals = read_training_logs(log_paths)
    if not losses:
        return False
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(np.arange(len(losses)), losses, lw=0.5, alpha=0.5, label="iteration")
    window = 48
    if len(losses) >= window:
        ax[0].plot(np.arange(window - 1, len(losses)), np.convolve(losses, np.ones(window) / window, "valid"),
                   label=f"mean of {window}")
    ax[0].set(xlabel="iteration", ylabel="training loss", title="training loss")
    ax[0].legend()
    if vals:
        epochs, psnr, ssim = zip(*vals)
        ax[1].plot(epochs, ssim, "o-", label="SSIM")
        ax[1].set(xlabel="epoch", ylabel="validation SSIM", title="validation (whole volume)")
        twin = ax[1].twinx()
        twin.plot(epochs, psnr, "s--", color="tab:orange", label="PSNR")
        twin.set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return True


def metric_chart(summary: dict, out_png: str) -> None:
    methods = list(summary)
    keys = [k for k in METRIC_LABELS if k != "seconds" and any(summary[m].get(k, {}).get("mean") is not None
                                                              for m in methods)]
    cols = 5
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows))
    for ax, key in zip(axes.flat, keys):
        means = [summary[m][key]["mean"] or 0 for m in methods]
        stds = [summary[m][key]["std"] or 0 for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, color=[f"C{i}" for i in range(len(methods))])
        ax.set_title(METRIC_LABELS[key], fontsize=9)
        ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def triplanar(volumes: dict, pet: np.ndarray, title: str, out_png: str, overlay: str | None = None) -> None:
    """One column per volume (axial, coronal, sagittal rows), then the PET in colour over ``overlay``
    (default: the last volume)."""
    from matplotlib import colormaps

    names = list(volumes)
    overlay = overlay if overlay in volumes else names[-1]
    centre = [s // 2 for s in pet.shape]
    cuts = [lambda v: v[:, :, centre[2]].T, lambda v: v[:, centre[1], :].T, lambda v: v[centre[0], :, :].T]
    fig, axes = plt.subplots(3, len(names) + 1, figsize=(2.1 * (len(names) + 1), 6.6), facecolor="black")
    for row, cut in enumerate(cuts):
        for col, name in enumerate(names):
            axes[row, col].imshow(cut(volumes[name]), cmap="hot" if name == "PET" else "gray", origin="lower",
                                  vmin=0, vmax=1)
        fused = cut(volumes[overlay])
        p = cut(pet)
        alpha = 0.6 * np.clip((p - 0.15) / 0.35, 0, 1)[..., None]
        axes[row, -1].imshow((1 - alpha) * fused[..., None] + alpha * colormaps["hot"](p)[..., :3], origin="lower")
        for ax in axes[row]:
            ax.set_axis_off()
    for col, name in enumerate([*names, f"PET over {overlay}"]):
        axes[0, col].set_title(name, color="white", fontsize=8)
    fig.suptitle(title, color="white")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80, facecolor="black")
    plt.close(fig)


def triplanar_views(pipeline: BundlePipeline, methods: dict, dataset_dir: str, split: str, images: str,
                    overlay: str | None = None, suffix: str = "") -> list[tuple[str, str, str]]:
    """Tri-planar pictures ``images/triplanar_<pattern><suffix>.png`` of the first normal and the first
    Alzheimer-like case of ``split``: the sources and every method's fusion on the network's grid, and the PET in
    colour over ``overlay``. Returns (pattern, file name, case id) per picture written."""
    from scripts.data import load_fusion_datalist

    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)
    written = []
    for pattern in ("normal", "alzheimer"):
        item = next((i for i in items if i.get("pattern") == pattern), None)
        if item is None:
            continue
        image = pipeline.preprocessing({"mri": item["mri"], "pet": item["pet"]})["image"]
        a, b = image[0].as_tensor(), image[1].as_tensor()
        volumes = {"MRI": a.numpy(), "PET": b.numpy()}
        volumes.update({name: method(a, b).clamp(0, 1).numpy() for name, method in methods.items()})
        name = f"triplanar_{pattern}{suffix}.png"
        case = os.path.basename(str(item["id"]))
        triplanar(volumes, b.numpy(), f"{case} ({pattern})", os.path.join(images, name), overlay=overlay)
        written.append((pattern, name, case))
    return written


def views(dataset_dir: str, models: str, output_dir: str, split: str = "testing", suffix: str = "", overlay: str = "",
          bundle_dir: str = os.path.join(ROOT, "bundle")) -> str:
    """Only the tri-planar pictures, into ``output_dir``: ``models`` as ``name=path.ts`` where a name
    ``x@0.3`` runs a conditioned model at PET emphasis 0.3 (e.g. three lambdas of one network); the PET overlay
    goes over the model named ``overlay`` (default: the first). Returns the pictures' paths, one per line."""
    pipeline = BundlePipeline(bundle_dir)
    methods = methods_from_flags(pipeline, models, baselines="none")
    if not methods:
        raise ValueError("--models: give name=path.ts[,...]")
    os.makedirs(output_dir, exist_ok=True)
    written = triplanar_views(pipeline, methods, dataset_dir, split, output_dir,
                              overlay=overlay or next(iter(methods)), suffix=suffix)
    return "\n".join(os.path.join(output_dir, name) for _, name, _ in written)


def _cell(stats: dict) -> str:
    """A table cell: mean ± std, or empty where the metric was not computed."""
    return "" if stats.get("mean") is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


SAME_BUDGET_KEYS = ("psnr", "ssim", "qabf", "vif", "regional_corr", "contrast_kept")


def same_budget_table(summary: dict, comparison_dir: str) -> list[str]:
    """Markdown lines: the runs of ``comparison_dir`` (one folder each, with the training ``seconds``) that
    appear in ``summary``, with their training time and the metrics of the project's bar."""
    runs = [name for name in sorted(os.listdir(comparison_dir))
            if os.path.isfile(os.path.join(comparison_dir, name, "seconds")) and name in summary]
    if not runs:
        return []
    lines = [f"## Same training budget (`{comparison_dir}`)", "",
             "| run | training (min) | " + " | ".join(METRIC_LABELS[k] for k in SAME_BUDGET_KEYS) + " |",
             "|---|---|" + "---|" * len(SAME_BUDGET_KEYS)]
    for name in runs:
        minutes = float(open(os.path.join(comparison_dir, name, "seconds")).read()) / 60
        cells = [_cell(summary[name].get(k, {})) for k in SAME_BUDGET_KEYS]
        lines.append(f"| {name} | {minutes:.0f} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(eval_dir: str, dataset_dir: str, output_dir: str = os.path.join(ROOT, "bundle", "docs"), models: str = "",
         models_2d: str = "", train_log: str = "", bundle_dir: str = os.path.join(ROOT, "bundle"), notes: str = "",
         comparison_dir: str = "") -> str:
    """``models`` / ``models_2d`` are drawn in the pictures (the first of ``models`` under the PET overlay);
    ``comparison_dir``: ``train_comparison.sh`` outputs (comma-separated): the runs of each that were scored
    get a same-budget table with their training time."""
    summary_doc = json.load(open(os.path.join(eval_dir, "summary.json")))
    summary = summary_doc["methods"]
    pipeline = BundlePipeline(bundle_dir)
    # before anything is written: a missing model file is a clear error, not a half-written report
    methods = methods_from_flags(pipeline, models, models_2d)
    images = os.path.join(output_dir, "images")
    os.makedirs(images, exist_ok=True)
    lines = ["# DCFB fusion: evaluation report", "",
             f"Test split of `{dataset_dir}` ({summary_doc['cases']} subjects), every metric over the whole head "
             "on each MRI's own grid (`scripts/fusion_eval.py compare`, `bundle/scripts/fusion_measures.py`). "
             "Mean ± standard deviation over subjects; time per volume on this machine's CPU.", ""]
    if notes:
        lines += [notes, ""]
    keys = [k for k in METRIC_LABELS if any(summary[m].get(k, {}).get("mean") is not None for m in summary)]
    lines.append("| method | " + " | ".join(METRIC_LABELS[k] for k in keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for method, values in summary.items():
        cells = [_cell(values.get(k, {})) for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    for folder in parse_names(comparison_dir):
        lines += same_budget_table(summary, folder)
    metric_chart(summary, os.path.join(images, "metrics.png"))
    lines += ["![metrics](images/metrics.png)", ""]

    for pattern, name, case in triplanar_views(pipeline, methods, dataset_dir, summary_doc["split"], images,
                                               overlay=next(iter(parse_models(models)), None)):
        lines += [f"### {pattern.capitalize()} subject {case}", "", f"![{pattern}](images/{name})", ""]
    if train_log and training_curve(parse_names(train_log), os.path.join(images, "training_curve.png")):
        lines += ["## Training", "", "![training curve](images/training_curve.png)", ""]
    lines.append(HOW_TO_READ)
    report = os.path.join(output_dir, "report.md")
    with open(report, "w") as f:
        f.write("\n".join(lines))
    print(f"report: {report}")
    return report
