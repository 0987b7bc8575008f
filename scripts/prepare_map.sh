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
echo "package (needs Docker):  monai-deploy package $root/deploy_app -c $root/deploy_app/app.yaml -m $stage/models -t dcfb-fusion --platform x86_64 -l DEBUG"
echo "run the MAP:             monai-deploy run dcfb-fusion-x64-workstation-dgpu-linux-amd64:0.1.0 -i DICOM_FOLDER -o OUTPUT_FOLDER"
