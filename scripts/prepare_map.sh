#!/usr/bin/env bash
# Stage what `monai-deploy package` takes besides deploy_app/: the bundle as the MAP's one model folder
# (configs, scripts and models/model.ts; the app reads the preprocessing from it). Then print the commands.
#   bash scripts/prepare_map.sh [BUNDLE_DIR] [STAGE_DIR]      defaults: bundle/ and build/map
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${1:-$root/bundle}"
stage="${2:-$root/build/map}"
if [ ! -f "$bundle/models/model.ts" ]; then
  echo "prepare_map: $bundle/models/model.ts is missing: export it with ckpt_export (see README.md)" >&2
  exit 1
fi
rm -rf "$stage/models"
mkdir -p "$stage/models/dcfb_fusion/models"
cp -r "$bundle/configs" "$bundle/scripts" "$bundle/docs" "$bundle/LICENSE" "$stage/models/dcfb_fusion/"
cp "$bundle/models/model.ts" "$stage/models/dcfb_fusion/models/"
find "$stage/models" -name __pycache__ -prune -exec rm -rf {} +
echo "staged the model folder: $stage/models/dcfb_fusion"
echo "build the MAP:           bash scripts/build_map.sh [--offline]"
echo "run the MAP:             bash scripts/run_map.sh -i DICOM_FOLDER -o OUTPUT_FOLDER"
