"""The MAP built for real (scripts/build_map.sh --offline: Debian's Docker daemon, a debootstrap base image,
``monai-deploy package``) and run the MAP's way (scripts/run_map.sh) on the full-size sample study.

Needs root, Docker and debootstrap (scripts/run_tests.sh installs them as root and then requires this test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import ROOT, run_script

pytestmark = pytest.mark.slow


def require_map_tools() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    for tool in ("docker", "debootstrap"):
        if not shutil.which(tool):
            problems.append(f"{tool} missing")
    if not shutil.which("dockerd") and subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        problems.append("no Docker daemon")
    if problems:
        if os.environ.get("DCFB_REQUIRE_SERVICES") == "1":
            pytest.fail("the MAP test cannot run: " + ", ".join(problems))
        pytest.skip("the MAP test needs root, Docker and debootstrap: " + ", ".join(problems))


@pytest.fixture(scope="module")
def map_image() -> str:
    require_map_tools()
    build = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build_map.sh"), "--offline"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print([line for line in build.stdout.splitlines() if line.startswith("[build_map] MAP")])
    return (Path(ROOT) / "build" / "map" / "image").read_text().strip()


@pytest.fixture(scope="module")
def sample_study(tmp_path_factory) -> Path:
    """The README's sample study (scripts/run_sample.sh makes the same one): one subject at the full 1 mm size."""
    root = tmp_path_factory.mktemp("sample")
    run_script("generate_cohort.py", "--output_dir", str(root / "cohort"), "--n_subjects", "1", "--seed", "2024",
               "--fraction_alzheimer", "1.0", "--val_fraction", "0", "--test_fraction", "0", "--workers", "1")
    run_script("export_dicom_study.py", "--subject_dir", str(root / "cohort" / "sub-0000"),
               "--output_dir", str(root / "study"))
    return root / "study"


def run_map(study: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_map.sh"), "-i", str(study), "-o", str(out), *extra],
                          capture_output=True, text=True)


def fused_pixels(folder: Path) -> dict[int, np.ndarray]:
    return {int(ds.InstanceNumber): ds.pixel_array for ds in map(pydicom.dcmread, sorted(folder.glob("*.dcm")))}


def test_map_fuses_the_sample_study_as_the_host_does(map_image, sample_study, tmp_path):
    host = subprocess.run([sys.executable, "-m", "deploy_app", "-i", str(sample_study), "-o", str(tmp_path / "host"),
                           "-m", os.path.join(ROOT, "bundle")], cwd=ROOT, capture_output=True, text=True)
    assert host.returncode == 0, host.stderr[-3000:]
    proc = run_map(sample_study, tmp_path / "map", "-e", "DCFB_WRITE_PREVIEW=1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert json.loads((tmp_path / "map" / "fusion_status.json").read_text())["status"] == "done"
    assert (tmp_path / "map" / "preview.png").is_file()  # a setting given as a MAP environment variable

    ours, theirs = fused_pixels(tmp_path / "host" / "fused_dicom"), fused_pixels(tmp_path / "map" / "fused_dicom")
    assert ours.keys() == theirs.keys() and len(ours) == len(list((sample_study / "MR").glob("*.dcm")))
    worst = max(int(np.abs(ours[k].astype(np.int32) - theirs[k]).max()) for k in ours)
    assert worst == 0, f"the MAP's fused series differs from the host's by up to {worst} stored values"
    # the input is mounted read-only and the study is unchanged
    assert not list(sample_study.rglob("*fused*"))


def test_map_reports_a_refused_study_with_the_apps_exit_status(map_image, sample_study, tmp_path):
    study = tmp_path / "mr_only"
    shutil.copytree(sample_study / "MR", study / "MR")
    proc = run_map(study, tmp_path / "out")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run_map: input refused:" in proc.stderr and "no PT series" in proc.stderr
    status = json.loads((tmp_path / "out" / "fusion_status.json").read_text())
    assert status["status"] == "refused" and status["exit_code"] == 1
    assert os.listdir(tmp_path / "out") == ["fusion_status.json"]  # nothing else, nothing partial
