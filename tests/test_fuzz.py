"""A seeded fuzz run of the app's DICOM input in the suite: hundreds of mutated files, in process, every kind.

No unhandled exception, no hang, and no silently wrong volume: a geometry, identity or value mutation is refused
naming the file or leaves the volume as it was; a pixel mutation changes only its own slice. The long run
(10,000 files and whole-app cases) is scripts/fuzz_dicom.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT, SCRIPTS

sys.path.insert(0, SCRIPTS)
from dcfb_fuzz.harness import fuzz  # noqa: E402
from dcfb_fuzz.mutations import GEOMETRY, IDENTITY, PIXELS, STRUCTURE, VALUES  # noqa: E402


def test_seeded_mutations_are_refused_or_harmless(tiny_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("*.txt", "*.json"))
    result = fuzz(study, 300, seed=20261129)
    kinds = {kind for kind, _ in result["counts"]}
    assert kinds >= {GEOMETRY, IDENTITY, VALUES, PIXELS, STRUCTURE}
    assert not result["failures"], dict(result["failures"])
    refused = sum(n for (_, outcome), n in result["counts"].items() if outcome == "refused")
    assert refused > 150  # most mutations are of attributes the app must check: it does


def test_fuzz_script_runs_in_process_and_through_the_app(tiny_study, app_bundle, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("*.txt", "*.json"))
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "fuzz_dicom.py"), "--study", str(study), "--cases",
                           "20", "--app_cases", "3", "--model", app_bundle, "--seed", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "in process" in proc.stdout and "whole app" in proc.stdout and "distinct failures: 0" in proc.stdout
