"""The app's requirements file is complete: a virtual environment made from it alone runs the app.

MONAI imports some modules only when a feature asks for them (tqdm for a sliding-window progress bar), so
reading the app's imports cannot prove the file complete; running the app in such an environment does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, read_series

REQUIREMENTS = Path(ROOT) / "deploy_app" / "requirements.txt"


def test_app_runs_in_a_virtual_environment_made_from_its_requirements_alone(tiny_study, app_bundle, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    torch_pin = next(line for line in REQUIREMENTS.read_text().splitlines() if line.startswith("torch=="))
    for args in ([torch_pin], ["-r", str(REQUIREMENTS)]):  # torch first: the CPU build, as scripts/setup_env.sh does
        pip = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                             capture_output=True, text=True)
        assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-3000:]
    # pytorch-ignite is left out on purpose (MONAI would import it on every start, about 1 s; see the requirements
    # file): nothing else may pull it in, and the run below shows that the app needs it nowhere
    assert subprocess.run([python, "-c", "import ignite"], capture_output=True).returncode != 0, "ignite is installed"

    # The app alone, outside the repository: nothing of the project's own environment on the path.
    app_root = tmp_path / "app_root"
    shutil.copytree(os.path.join(ROOT, "deploy_app"), app_root / "deploy_app", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    out = tmp_path / "out"
    proc = subprocess.run([python, "-m", "deploy_app", "-i", tiny_study, "-o", str(out), "-m", app_bundle, "--preview"],
                          cwd=app_root, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fused, _ = read_series(str(out / "fused_dicom"))
    assert fused.shape == read_series(os.path.join(tiny_study, "MR"))[0].shape
    assert (out / "preview.png").is_file()
