"""Fuzz the app's DICOM input with seeded mutations; print counts per outcome and the distinct failures.

    .venv/bin/python scripts/fuzz_dicom.py --study data/fuzz/study --cases 10000 --app_cases 50 --seed 0

--study: a DICOM study folder with MR/ and PT/ series (``scripts/export_dicom_study.py`` makes one; small is fast:
``generate_cohort.py --size 48``). In process (``--cases``): one file of the MR or PT series replaced by a mutation
(``scripts/dcfb_fuzz/mutations.py``), read by the app's own input stages, and judged against the unmutated
volume (``scripts/dcfb_fuzz/harness.py``: refused, same, local, or WRONG / crash / hang). Through the whole app
(``--app_cases``): ``python -m deploy_app`` on a copy of the study with one mutated file, with a time limit;
it must exit 0 or 1 (never 3, never a traceback), leave only ``fusion_status.json`` in OUT when it refuses, and
for a geometry, identity or value mutation that it accepts, write the unmutated study's fused series (within
the rescale step). Exit status 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

from dcfb_fuzz.harness import ALLOWED, fuzz  # noqa: E402
from dcfb_fuzz.mutations import GEOMETRY, IDENTITY, MUTATIONS, VALUES  # noqa: E402


def fused_series(out: Path) -> np.ndarray:
    import pydicom

    files = sorted((out / "fused_dicom").glob("*.dcm"))
    return np.stack([pydicom.dcmread(p).pixel_array for p in files]).astype(np.int32)


def run_app(study: Path, out: Path, model: Path, seconds: int) -> tuple[int | None, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "deploy_app", "-i", str(study), "-o", str(out), "-m", str(model)],
                              cwd=ROOT, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stderr


def app_fuzz(study: Path, model: Path, n_cases: int, seed: int, seconds: int) -> tuple[Counter, Counter]:
    rng = np.random.default_rng(seed + 1)
    work = Path(tempfile.mkdtemp(prefix="dcfb-appfuzz-"))
    counts, failures = Counter(), Counter()
    try:
        status, err = run_app(study, work / "baseline", model, seconds)
        if status != 0:
            raise SystemExit(f"fuzz_dicom: the unmutated study is not fused (status {status}): {err[-500:]}")
        baseline = fused_series(work / "baseline")
        for k in range(n_cases):
            label = ("MR", "PT")[k % 2]
            mutation = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
            case = work / f"case{k}"
            shutil.copytree(study, case / "in")
            files = sorted((case / "in" / label).glob("*.dcm"))
            target = files[int(rng.integers(0, len(files)))]
            other = files[(files.index(target) + 1) % len(files)]
            import pydicom

            context = {"other_sop_uid": str(pydicom.dcmread(other, stop_before_pixels=True).SOPInstanceUID)}
            try:
                target.write_bytes(mutation.apply(target.read_bytes(), rng, context))
            except Exception:  # noqa: BLE001 - not applicable to this file
                counts[(mutation.kind, "not applicable")] += 1
                shutil.rmtree(case, ignore_errors=True)
                continue
            status, err = run_app(case / "in", case / "out", model, seconds)
            if status is None:
                outcome = "hang"
            elif status == 1:
                outcome = "refused" if os.listdir(case / "out") == ["fusion_status.json"] else "refused, OUT not clean"
            elif status != 0:
                outcome = f"exit {status}"
            elif "Traceback" in err:
                outcome = "traceback printed"
            else:
                fused = fused_series(case / "out")
                if fused.shape != baseline.shape:
                    outcome = "WRONG"
                elif np.abs(fused - baseline).max() <= 1:
                    outcome = "same"
                else:
                    outcome = "changed" if mutation.kind not in (GEOMETRY, IDENTITY, VALUES) else "WRONG"
            counts[(mutation.kind, outcome)] += 1
            if outcome not in ("refused", "same", "changed"):
                failures[f"{outcome}: {mutation.name} ({label}) {err.strip().splitlines()[-1] if err.strip() else ''}"] += 1
            print(f"[fuzz] app case {k + 1}/{n_cases}: {mutation.name} ({label}): {outcome}", flush=True)
            shutil.rmtree(case, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return counts, failures


def report(title: str, counts: Counter, failures: Counter) -> None:
    print(f"\n{title}: {sum(counts.values())} cases")
    for (kind, outcome), n in sorted(counts.items()):
        print(f"  {kind:10s} {outcome:28s} {n}")
    print(f"  distinct failures: {len(failures)}")
    for signature, n in failures.most_common():
        print(f"    {n:5d}  {signature}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="DICOM study folder with MR/ and PT/ series")
    parser.add_argument("--cases", type=int, default=10000, help="in-process cases (default 10000)")
    parser.add_argument("--app_cases", type=int, default=0, help="whole-app cases (default 0)")
    parser.add_argument("--model", type=Path, default=ROOT / "bundle", help="bundle for the whole-app cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per whole-app case before it is a hang")
    args = parser.parse_args(argv)
    if not (args.study / "MR").is_dir() or not (args.study / "PT").is_dir():
        parser.error(f"--study {args.study} has no MR/ and PT/ folders")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    start, last = time.monotonic(), [0.0]

    def progress(done: int, total: int, text: str) -> None:
        if time.monotonic() - last[0] > 10 or done == total:
            last[0] = time.monotonic()
            print(f"[fuzz] in process {done}/{total} ({time.monotonic() - start:.0f} s): {text}", flush=True)

    result = fuzz(args.study, args.cases, args.seed, progress) if args.cases else {"counts": Counter(), "failures": Counter()}
    report(f"in process ({time.monotonic() - start:.0f} s)", result["counts"], result["failures"])
    failed = sum(result["failures"].values())
    if args.app_cases:
        start_app = time.monotonic()
        counts, failures = app_fuzz(args.study, args.model, args.app_cases, args.seed, args.timeout)
        report(f"whole app ({time.monotonic() - start_app:.0f} s)", counts, failures)
        failed += sum(failures.values())
    print(f"\nallowed outcomes per kind: {', '.join(f'{k}: {sorted(v)}' for k, v in ALLOWED.items())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
