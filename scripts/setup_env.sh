#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the pinned requirements.
# Installs Debian's dicom3tools (dciodvfy, the DICOM validator the tests use) when missing and root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DCFB_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned requirements (first time: a few minutes)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, exactly pinned: the CPU build; any other resolution pulls CUDA packages.
  "$venv/bin/python" -m pip install -q "$(grep -E '^torch==' "$root/requirements.txt")"
  "$venv/bin/python" -m pip install -q -r "$root/requirements.txt"
  "$venv/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} was installed instead of 2.13.0"
PY
  echo "$want" > "$stamp"
fi
if [ "${DCFB_NEED_DCIODVFY:-0}" = 1 ] && ! command -v dciodvfy >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing dicom3tools (dciodvfy)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null
  else
    echo "[setup] dciodvfy is missing: install Debian's dicom3tools (sudo apt-get install dicom3tools)" >&2
    exit 1
  fi
fi
