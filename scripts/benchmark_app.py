"""Benchmark the MONAI Deploy app on a DICOM study (default: the full-size sample study).

Two measurements, both printed as tables:
1. stages, in one process: the app's own operators called in graph order (DICOM read = load + select + volume
   conversion of MR and PT; align; infer = bundle preprocessing, network, inversion; write), with the wall time
   and the peak resident memory of each stage (Linux: the peak is reset between stages through
   /proc/self/clear_refs);
2. the whole app as a user runs it (`python -m deploy_app ...`, imports and Holoscan start-up included), with
   its wall time and peak memory (the proportional set size of the app and the processes it forks, sampled every
   50 ms in one more run, whose time is not counted: their RSS would count the pages they share twice): with the default CPU fast path (the TorchScript model's
   weights in channels-last 3D layout, freed memory kept for reuse: ``deploy_app/memory_reuse.py``, DICOM files
   checked and written in one process per CPU: ``deploy_app/forked_parts.py``) and without it (DCFB_CPU_OPTIMIZE=0),
   side by side, with the largest difference between their fused series in 12-bit steps.
   The stages run with the fast path, as the app does by default.

Targets (2-core CPU, full-size sample study, DICOM in to DICOM out): at most 8 s and 2 GB.

    .venv/bin/python scripts/benchmark_app.py [--study data/sample/study] [--model bundle] [--json out.json]
        [--repeat N] [--python PYTHON]

``--repeat N`` runs the whole app N times per path and gives the median and the range (its start-up varies by a
second or more on a busy machine). ``--python`` runs the whole app with another interpreter, e.g. one of a virtual
environment made from ``deploy_app/requirements.txt`` alone, as in a MAP (MONAI imports at start-up whatever
optional package it finds installed: the development environment, with the training and test tools, starts slower).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S, TARGET_GB = 8.0, 2.0


def peak_rss_gb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass  # not Linux: the peaks are then cumulative, which the table says


def stage_benchmark(study: Path, model: Path, output: Path) -> list[tuple[str, float, float]]:
    import json as _json

    from monai.deploy.core import Application
    from monai.deploy.operators import DICOMSeriesSelectorOperator

    from deploy_app.app import DEFAULT_RULES, load_selection_rules
    from deploy_app.operators import (CheckedDICOMDataLoaderOperator, FusedSeriesWriterOperator,
                                      FusionInferenceOperator, PetMrAlignmentOperator, SeriesVolumeOperator)
    from deploy_app.operators.series_volume import choose_series
    from monai.deploy.core.domain import StudySelectedSeries

    class Holder(Application):  # operators need a fragment; nothing is composed or run
        def compose(self):
            pass

    app = Holder()
    rules = load_selection_rules(DEFAULT_RULES)
    rows = []

    def timed(name, fn):
        reset_peak()
        start = time.perf_counter()
        value = fn()
        rows.append((name, time.perf_counter() - start, peak_rss_gb()))
        print(f"  {name}: {rows[-1][1]:.2f} s", flush=True)
        return value

    inference = timed("load model", lambda: FusionInferenceOperator(app, model_path=model, name="inference"))
    writer = FusedSeriesWriterOperator(app, output_folder=output, write_nifti=False, write_preview=False, name="w")

    def read():
        studies = CheckedDICOMDataLoaderOperator(app, input_folder=study, name="loader").load_data_to_studies(study)
        volumes = {}
        for label in ("MR", "PT"):
            selector = DICOMSeriesSelectorOperator(app, rules=_json.dumps(rules[label]), all_matched=True,
                                                   sort_by_sop_instance_count=True, name=f"{label}_selector")
            selected = selector.filter(rules[label], studies, all_matched=True, sort_by_sop_instance_count=True)
            study_sel, sel = choose_series(selected, label)
            only = StudySelectedSeries(study_sel.study)
            only.add_selected_series(sel)
            converter = SeriesVolumeOperator(app, label=label, name=f"{label}_volume")
            volumes[label] = (converter.convert_to_image([only]), sel.series)
        return volumes

    volumes = timed("DICOM read", read)
    pair = timed("align", lambda: PetMrAlignmentOperator(app, name="align").align(
        volumes["MR"][0], volumes["MR"][1], volumes["PT"][0], volumes["PT"][1]))
    result = timed("infer", lambda: inference.fuse(pair))
    for part, seconds in result.timings_s.items():  # the bundle's preprocessing, the network, the inversion
        rows.append((f"  {part.removesuffix('_s')}", seconds, float("nan")))
    timed("write DICOM", lambda: writer.write(result))
    return rows


def tree_pss_gb(pid: int) -> float:
    """The proportional set size of process ``pid`` and its children (the app forks DICOM readers and writers), GB.

    Why PSS: a forked child maps the app's pages copy-on-write, and its RSS counts them again; PSS divides each shared
    page among the processes that map it, so the sum is the memory the tree really holds (what a container's memory
    limit sees). Linux only (``/proc/PID/smaps_rollup``); 0 where it cannot be read."""

    def pss(p: int) -> float:
        try:
            with open(f"/proc/{p}/smaps_rollup") as rollup:
                return next((int(line.split()[1]) for line in rollup if line.startswith("Pss:")), 0) / 2**20
        except OSError:
            return 0.0

    children = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.update(int(c) for c in f.read().split())
    except OSError:
        pass
    return pss(pid) + sum(pss(c) for c in children)


def whole_app(study: Path, model: Path, output: Path, env: dict | None = None, python: str = sys.executable,
              memory: bool = False) -> tuple[float, float, int]:
    """Wall time, peak memory (GB) and exit status of one run of the app. With ``memory``, the peak is the largest PSS
    of the app and its children, sampled every 50 ms (``tree_pss_gb``; the sampling walks the app's page tables and
    slows it down, so such a run's time is not used); otherwise (and where /proc cannot give it) the largest RSS of any
    of them from ``wait4``, which counts the pages a forked child shares with the app twice."""
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "deploy_app", "-i", str(study), "-o", str(output), "-m", str(model)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_pss_gb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    if memory:
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    if memory:
        sampler.join()
    return wall, peak[0] or usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=ROOT / "data" / "sample" / "study")
    parser.add_argument("--model", type=Path, default=ROOT / "bundle")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="whole-app runs per path (median and range)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the whole app")
    args = parser.parse_args()
    if not (args.study / "MR").is_dir():
        print(f"benchmark_app: no study at {args.study}: run scripts/run_sample.sh first", file=sys.stderr)
        return 2
    from deploy_app.memory_reuse import cpu_fast_path_enabled, keep_freed_memory

    if cpu_fast_path_enabled():  # as the app's __main__ does, before torch allocates
        keep_freed_memory()
    import torch

    print(f"study {args.study}, model {args.model}, torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}; "
          f"whole app run by {args.python}")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in (("CPU fast path (default)", {}), ("plain fp32 (=0)", {"DCFB_CPU_OPTIMIZE": "0"})):
            print(f"whole app (subprocess), {name}:", flush=True)
            walls, peaks = [], []
            # the timed runs, then one more that measures the memory (its sampling slows the app down)
            for k in range(max(1, args.repeat) + 1):
                memory = k == max(1, args.repeat)
                wall, peak, code = whole_app(args.study, args.model, Path(tmp) / f"{name}{k}", env, args.python,
                                             memory)
                if code != 0:
                    print(f"benchmark_app: the app failed with exit status {code} ({name})", file=sys.stderr)
                    return 1
                if memory:
                    peaks.append(peak)
                else:
                    walls.append(wall)
            runs[name] = (statistics.median(walls), max(peaks), stored_fused(Path(tmp) / f"{name}0"), walls)
        steps = int(abs(runs["CPU fast path (default)"][2] - runs["plain fp32 (=0)"][2]).max())
        print("stages (in process, the default path):", flush=True)
        rows = stage_benchmark(args.study, args.model, Path(tmp) / "stages")
    print()
    print(f"{'stage':<16}{'time s':>9}{'peak GB':>10}")
    for name, seconds, gb in rows:
        print(f"{name:<16}{seconds:>9.2f}{'' if gb != gb else f'{gb:.2f}':>10}")
    print(f"{'stages total':<16}{sum(r[1] for r in rows if not r[0].startswith(' ')):>9.2f}"
          f"{max(r[2] for r in rows if r[2] == r[2]):>10.2f}")
    print(f"\n{'whole app':<25}{'time s':>9}{'peak GB':>10}   target <= {TARGET_S:g} s and <= {TARGET_GB:g} GB")
    for name, (wall, peak, _, walls) in runs.items():
        verdict = "met" if wall <= TARGET_S and peak <= TARGET_GB else "MISSED"
        spread = f"   (median of {len(walls)}: {min(walls):.2f}-{max(walls):.2f} s)" if len(walls) > 1 else ""
        print(f"{name:<25}{wall:>9.2f}{peak:>10.2f}   {verdict}{spread}")
    print(f"fused series, CPU fast path against plain fp32: at most {steps} stored step(s) apart (12-bit, 1/4095)")
    if args.json:
        args.json.write_text(json.dumps({"stages": [dict(zip(("stage", "seconds", "peak_gb"), r)) for r in rows],
                                         "whole_app": {k: {"seconds": v[0], "peak_gb": v[1], "runs_s": v[3]}
                                                       for k, v in runs.items()},
                                         "python": args.python,
                                         "max_stored_step_difference": steps}, indent=2))
    return 0


def stored_fused(output: Path):
    """The fused series' stored values [slice, row, column] as written."""
    import numpy as np
    import pydicom

    return np.stack([pydicom.dcmread(p).pixel_array for p in sorted((output / "fused_dicom").glob("*.dcm"))]).astype(int)


if __name__ == "__main__":
    sys.exit(main())
