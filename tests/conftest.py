"""Shared fixtures: a tiny simulated cohort and DICOM studies made from it, once per test session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage

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


def dciodvfy_errors(path: str) -> list[str]:
    """The 'Error' lines dciodvfy (dicom3tools) prints for one DICOM file."""
    assert shutil.which("dciodvfy"), "dciodvfy missing: run scripts/run_tests.sh, which installs dicom3tools"
    proc = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session", autouse=True)
def every_written_dicom_file_passes_dciodvfy(tmp_path_factory):
    """After the session: every DICOM file the app wrote in any test (every folder a ``fusion_summary.json``
    lists as written, under the session's temporary folders) has no dciodvfy error."""
    yield
    base = tmp_path_factory.getbasetemp()
    files = [path for summary in base.rglob("fusion_summary.json")
             for name in json.loads(summary.read_text()).get("written", []) if (summary.parent / name).is_dir()
             for path in sorted((summary.parent / name).glob("*.dcm"))]
    failing = {str(path.relative_to(base)): errors for path in files if (errors := dciodvfy_errors(str(path)))}
    assert not failing, f"{len(failing)} of {len(files)} written DICOM files fail dciodvfy: " + \
        "; ".join(f"{path}: {errors[:3]}" for path, errors in list(failing.items())[:5])
    print(f"\ndciodvfy: {len(files)} DICOM files written by the app in this session, no errors")


def read_series(folder: str):
    """A folder holding one DICOM series, read by MONAI's PydicomReader: (voxels, RAS affine)."""
    image = LoadImage(reader=PydicomReader(), image_only=True)(folder)
    return np.asarray(image), np.asarray(image.affine)


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


@pytest.fixture(scope="session")
def oblique_study(tiny_cohort, tmp_path_factory) -> str:
    """A DICOM study of the second tiny subject: sagittal MR tilted by 15 degrees, and a PT series in its own
    Frame of Reference (moved by a known rigid transform, recorded in export.json)."""
    out = tmp_path_factory.mktemp("oblique") / "study"
    run_script("export_dicom_study.py", "--subject_dir", os.path.join(tiny_cohort, "sub-0001"), "--output_dir",
               str(out), "--mr_plane", "sagittal", "--mr_tilt_deg", "15", "--separate_frames")
    return str(out)


@pytest.fixture(scope="session")
def app_bundle(tmp_path_factory) -> str:
    """The bundle copied out of the repo with seeded (untrained) weights exported to models/model.ts."""
    bundle = tmp_path_factory.mktemp("models") / "dcfb_fusion"
    shutil.copytree(os.path.join(ROOT, "bundle"), bundle, ignore=shutil.ignore_patterns("eval", "models", "__pycache__"))
    (bundle / "models").mkdir()
    sys.path.insert(0, str(bundle))
    try:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        torch.manual_seed(7)
        network = parser.get_parsed_content("network_def")
        with torch.no_grad():  # FiLM starts as the identity; seeded weights make the PET emphasis change the output
            for name, module in network.named_modules():
                if name.endswith("film"):
                    module.mlp[2].weight.normal_(0, 0.5)
        torch.save(network.state_dict(), bundle / "models" / "model.pt")
    finally:
        sys.path.remove(str(bundle))
    export = subprocess.run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
                             "models/model.ts", "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
                             "--config_file", "configs/inference.json"], cwd=bundle, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(bundle)})
    assert export.returncode == 0, export.stderr[-2000:]
    return str(bundle)
