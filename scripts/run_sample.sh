#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, make the sample study (one simulated subject at the
# full 1 mm MNI size, exported as a DICOM MR + PT study) if it is missing, and fuse it with the MONAI Deploy app.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
py="${DCFB_VENV:-$root/.venv}/bin/python"
sample="${DCFB_SAMPLE_DIR:-$root/data/sample}"
out="${DCFB_SAMPLE_OUTPUT:-$root/output/sample_fusion}"
model="${DCFB_MODEL:-$root/bundle}"
if [ ! -f "$sample/study/export.json" ]; then
  echo "[sample] generating the sample subject"
  "$py" "$root/scripts/generate_cohort.py" --output_dir "$sample/cohort" --n_subjects 1 --seed 2024 \
    --fraction_alzheimer 1.0 --val_fraction 0 --test_fraction 0 --workers 1
  "$py" "$root/scripts/export_dicom_study.py" --subject_dir "$sample/cohort/sub-0000" \
    --output_dir "$sample/study" --overwrite
fi
echo "[sample] DICOM study (MR and PT series): $sample/study"
# The app never overwrites: clear the previous run of this script (and only that folder) first.
rm -rf "$out"
echo "[sample] fusing with the MONAI Deploy app (model: $model)"
(cd "$root" && "$py" -m deploy_app -i "$sample/study" -o "$out" -m "$model" --preview --nifti)
echo "[sample] fused DICOM series:        $out/fused_dicom"
echo "[sample] PET-over-fused colour DICOM: $out/fusion_color_dicom"
echo "[sample] preview picture:            $out/preview.png"
echo "[sample] fused NIfTI and summary:    $out/fused.nii.gz, $out/fusion_summary.json"
