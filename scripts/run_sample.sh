#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, make the sample study (one simulated
# subject at the full 1 mm MNI size, exported as a DICOM MR + PT study) if it is missing, and fuse it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
py="${DCFB_VENV:-$root/.venv}/bin/python"
sample="${DCFB_SAMPLE_DIR:-$root/data/sample}"
if [ ! -f "$sample/study/export.json" ]; then
  echo "[sample] generating the sample subject"
  "$py" "$root/scripts/generate_cohort.py" --output_dir "$sample/cohort" --n_subjects 1 --seed 2024 \
    --fraction_alzheimer 1.0 --val_fraction 0 --test_fraction 0 --workers 1
  "$py" "$root/scripts/export_dicom_study.py" --subject_dir "$sample/cohort/sub-0000" \
    --output_dir "$sample/study" --overwrite
fi
echo "[sample] DICOM study (MR and PT series): $sample/study"
