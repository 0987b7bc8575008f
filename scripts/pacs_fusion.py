"""Fuse one study from a PACS and send the results back: for sites without MONAI Deploy Express.

    .venv/bin/python scripts/pacs_fusion.py --pacs ORTHANC@127.0.0.1:4242 --study 1.2.3... [--map]

1. Retrieves the study by C-GET (the PACS must let our AE title, --calling_aet, retrieve).
2. Runs the app on it: ``python -m deploy_app`` with the bundle (``--model``), or the MAP (``--map``, through
   ``scripts/run_map.sh``).
3. Sends every DICOM file the app wrote (fused series, colour series) back by C-STORE; an object the PACS
   refuses is named with the status the PACS gave.

Exit status: 0 done; 1 the study is not on the PACS or the app refused it; 2 usage; 3 internal error;
4 the PACS could not be reached or refused objects. Patient names and IDs never reach the terminal or logs.
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
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcfb_pacs.dimse import Pacs, PacsError, find_study, retrieve_study, store_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXIT_PACS = 4


def say(message: str) -> None:
    print(f"[pacs_fusion] {message}", flush=True)


def progress_printer(what: str, every_s: float = 2.0):
    """Progress lines for a long transfer: at most one each ``every_s`` seconds, and the last one."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            say(f"{what}: {done}/{total}")

    return report


def run_app(study: Path, output: Path, args: argparse.Namespace) -> int:
    if args.map:
        cmd = ["bash", str(ROOT / "scripts" / "run_map.sh"), "-i", str(study), "-o", str(output)]
        if args.image:
            cmd += ["--image", args.image]
        if args.pet_emphasis is not None:
            cmd += ["-e", f"DCFB_PET_EMPHASIS={args.pet_emphasis}"]
    else:
        cmd = [sys.executable, "-m", "deploy_app", "-i", str(study), "-o", str(output), "-m", str(args.model)]
        if args.pet_emphasis is not None:
            cmd += ["--pet_emphasis", str(args.pet_emphasis)]
    say("fusing: " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pacs", required=True, help="the PACS as AE_TITLE@HOST:PORT")
    parser.add_argument("--study", required=True, help="StudyInstanceUID of the study to fuse")
    parser.add_argument("--calling_aet", default="DCFB_FUSION", help="our AE title (default DCFB_FUSION)")
    parser.add_argument("--model", type=Path, default=ROOT / "bundle", help="bundle folder or model.ts for the app")
    parser.add_argument("--map", action="store_true", help="run the MAP (scripts/run_map.sh) instead of the app")
    parser.add_argument("--image", help="MAP image tag (default: the one scripts/build_map.sh built)")
    parser.add_argument("--pet_emphasis", type=float, help="PET emphasis lambda in [0, 1] (default: the bundle's)")
    parser.add_argument("--work", type=Path, help="keep the retrieved study and outputs here (default: a temp folder, removed)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the PACS (default 600)")
    args = parser.parse_args(argv)
    try:
        pacs = Pacs.parse(args.pacs, args.calling_aet)
    except ValueError as err:
        parser.error(str(err))
    if args.pet_emphasis is not None and not 0 <= args.pet_emphasis <= 1:
        parser.error(f"--pet_emphasis must be in [0, 1], got {args.pet_emphasis}")
    logging.basicConfig(level=logging.WARNING, format="[pacs_fusion] %(message)s")
    # pynetdicom logs every association at INFO and datasets at DEBUG: patient data stays out of the terminal.
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)

    work = args.work or Path(tempfile.mkdtemp(prefix="dcfb-pacs-"))
    if args.work and args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work} is not empty")
    study, output = work / "study", work / "output"
    try:
        start = time.monotonic()
        listed = find_study(pacs, args.study, args.timeout)
        if listed is None:
            print(f"pacs_fusion: study {args.study} is not on {pacs}", file=sys.stderr)
            return 1
        say(f"retrieving study {args.study} from {pacs} ({listed} instances listed)")
        count = retrieve_study(pacs, args.study, study, progress_printer("retrieved"), args.timeout)
        if count == 0:
            print(f"pacs_fusion: {pacs} sent no instance of study {args.study}", file=sys.stderr)
            return 1
        say(f"retrieved {count} instances in {time.monotonic() - start:.1f} s")

        status = run_app(study, output, args)
        if status != 0:
            print(f"pacs_fusion: the app ended with status {status}: nothing was sent to {pacs}", file=sys.stderr)
            return status
        files = sorted(output.rglob("*.dcm"))
        series = sorted({p.parent.name for p in files})
        say(f"sending {len(files)} objects ({', '.join(series)}) to {pacs}")
        report = store_files(pacs, files, progress_printer("sent"), args.timeout)
        for path, reason in report.refused:
            print(f"pacs_fusion: {pacs} refused {path.relative_to(output)}: {reason}", file=sys.stderr)
        say(f"done in {time.monotonic() - start:.1f} s: {len(report.sent)} objects stored, "
            f"{len(report.refused)} refused")
        return EXIT_PACS if report.refused else 0
    except PacsError as err:
        print(f"pacs_fusion: {err}", file=sys.stderr)
        return EXIT_PACS
    except Exception as err:  # noqa: BLE001 - one line for the user, not a traceback
        print(f"pacs_fusion: internal error ({type(err).__name__}: {err})", file=sys.stderr)
        return 3
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
