"""Shared fixtures: a tiny simulated cohort and DICOM studies made from it, once per test session."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
TINY_SIZE = 48


def run_script(name: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a user-facing script as a user would, with this interpreter."""
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> str:
    """Six subjects on a coarse grid (about 41x48x39 voxels), the datalist split 4/1/1."""
    out = tmp_path_factory.mktemp("cohort")
    run_script("generate_cohort.py", "--output_dir", str(out), "--n_subjects", "6", "--size", str(TINY_SIZE),
               "--seed", "11", "--val_fraction", "0.17", "--test_fraction", "0.17")
    return str(out)


@pytest.fixture(scope="session")
def tiny_study(tiny_cohort, tmp_path_factory) -> str:
    """A DICOM study (axial MR, shared Frame of Reference) of the first tiny subject."""
    out = tmp_path_factory.mktemp("study") / "study"
    run_script("export_dicom_study.py", "--subject_dir", os.path.join(tiny_cohort, "sub-0000"),
               "--output_dir", str(out))
    return str(out)
