#!/usr/bin/env bash
# Run the MAP (built by scripts/build_map.sh) on a folder of DICOM files, the MAP's way, and exit with the app's
# own status: 0 done, 1 input refused, 2 usage, 3 internal error.
#   bash scripts/run_map.sh -i DICOM_FOLDER -o OUTPUT_FOLDER [--image TAG] [--monai-deploy-run] [-e NAME=VALUE ...]
# -e passes the app's settings (DCFB_PET_EMPHASIS, DCFB_WRITE_PREVIEW, DCFB_WRITE_NIFTI, DCFB_SELECTION_RULES, DCFB_CPU_OPTIMIZE,
# DCFB_DICOM_PROCESSES).
# MAP conventions: the input is mounted read-only at /var/holoscan/input, the output at /var/holoscan/output,
# the model is inside the image (/opt/holoscan/models), and the app runs as the image's user, `holoscan`
# (UID 1000: its Python packages live in that user's home, so another UID cannot start the app). The output is
# written to a staging folder that user can write, then moved into OUTPUT_FOLDER (made if missing; it must be
# empty) and given to the caller. The app's traceback logs of internal errors land in MAP_LOGS (a temp folder).
# Why the status comes from OUTPUT_FOLDER/fusion_status.json: the MAP's entrypoint (holoscan-cli's `tools`)
# and `monai-deploy run` both exit 0 when the app fails.
# --monai-deploy-run starts the MAP with `monai-deploy run` instead of `docker run` (no -e settings then).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
input="" output="" image="" via_runner=0 envs=()
usage() { echo "usage: bash scripts/run_map.sh -i DICOM_FOLDER -o OUTPUT_FOLDER [--image TAG] [--monai-deploy-run] [-e NAME=VALUE ...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -i|--input) [ $# -ge 2 ] || usage; input="$2"; shift 2 ;;
    -o|--output) [ $# -ge 2 ] || usage; output="$2"; shift 2 ;;
    --image) [ $# -ge 2 ] || usage; image="$2"; shift 2 ;;
    -e) [ $# -ge 2 ] || usage; envs+=(-e "$2"); shift 2 ;;
    --monai-deploy-run) via_runner=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run_map: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$input" ] && [ -n "$output" ] || usage
[ -z "$image" ] && [ -f "$root/build/map/image" ] && image="$(cat "$root/build/map/image")"
image="${image:-dcfb-fusion-x64-workstation-dgpu-linux-amd64:0.1.0}"
[ "$via_runner" = 1 ] && [ ${#envs[@]} -gt 0 ] && { echo "run_map: -e settings need the docker run route" >&2; exit 2; }
[ -d "$input" ] || { echo "run_map: input folder $input does not exist" >&2; exit 1; }
docker image inspect "$image" >/dev/null 2>&1 || { echo "run_map: no image $image (build it: bash scripts/build_map.sh --offline)" >&2; exit 2; }
if [ -e "$output" ] && [ -n "$(ls -A "$output" 2>/dev/null)" ]; then
  echo "run_map: output folder $output is not empty (nothing is overwritten)" >&2; exit 1
fi
mkdir -p "$output"
input="$(cd "$input" && pwd)" output="$(cd "$output" && pwd)"

map_uid="$(docker run --rm --entrypoint id "$image" -u)" map_gid="$(docker run --rm --entrypoint id "$image" -g)"
stage="$(mktemp -d "$(dirname "$output")/.dcfb-map-stage.XXXXXX")"
logs="${MAP_LOGS:-$(mktemp -d /tmp/dcfb-map-logs.XXXXXX)}"
trap 'rm -rf "$stage" "${input_copy:-}"' EXIT
chmod 0777 "$stage" "$logs"  # the image's user (UID $map_uid) writes there, whoever runs this script
# The image's user must be able to read the study: when some of it is closed to other users (a folder made
# with mode 0700, as mktemp does), the MAP gets a readable copy; the original is never touched.
if [ -n "$(find "$input" \( -type d ! -perm -o=rx \) -o \( -type f ! -perm -o=r \) 2>/dev/null | head -1)" ]; then
  input_copy="$(mktemp -d /tmp/dcfb-map-input.XXXXXX)"
  echo "run_map: $input is not readable by the MAP's user (UID $map_uid): giving the MAP a readable copy"
  cp -r "$input/." "$input_copy/" && chmod -R a+rX "$input_copy"
  input="$input_copy"
fi

set +e
if [ "$via_runner" = 1 ]; then
  runner_env=()
  # `monai-deploy run` refuses to start unless a docker-buildx plugin file exists in one of a few folders, though
  # running builds nothing. Where none is installed (Debian 12 has none), a private HOME holds the stand-in.
  if ! ls "$HOME/.docker/cli-plugins/docker-buildx" /usr/local/lib/docker/cli-plugins/docker-buildx \
       /usr/local/libexec/docker/cli-plugins/docker-buildx /usr/lib/docker/cli-plugins/docker-buildx \
       /usr/libexec/docker/cli-plugins/docker-buildx >/dev/null 2>&1; then
    runner_home="$root/build/map/runner-home"
    mkdir -p "$runner_home/.docker/cli-plugins"
    install -m 755 "$root/scripts/map_offline/docker-buildx" "$runner_home/.docker/cli-plugins/docker-buildx"
    echo "run_map: no docker-buildx plugin here: monai-deploy run gets the stand-in (HOME=$runner_home)"
    runner_env=(HOME="$runner_home")
  fi
  # --gpus none: without it the runner counts GPUs with nvidia-smi and fails where there is none. The runner
  # always asks Docker for the `nvidia` runtime; a CPU host needs one by that name (build_map.sh starts Debian's
  # daemon with runc registered as `nvidia`: dockerd --add-runtime nvidia=runc).
  env "${runner_env[@]}" PATH="${DCFB_VENV:-$root/.venv}/bin:$PATH" monai-deploy run "$image" -i "$input" \
    -o "$stage" --uid "$map_uid" --gid "$map_gid" --gpus none
else
  docker run --rm --ulimit stack=33554432 -v "$input:/var/holoscan/input:ro" -v "$stage:/var/holoscan/output" \
    -v "$logs:/var/holoscan/logs" "${envs[@]}" "$image"
fi
container_status=$?
set -e

status_file="$stage/fusion_status.json"
if [ ! -f "$status_file" ]; then
  echo "run_map: the MAP ended without a status file (container exit status $container_status): internal error" >&2
  exit 3
fi
app_status="$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["exit_code"]))' "$status_file")"
find "$stage" -mindepth 1 -maxdepth 1 -exec mv -t "$output" {} +
chown -R "$(id -u):$(id -g)" "$output" 2>/dev/null || true
case "$app_status" in
  0) echo "run_map: done: outputs in $output" ;;
  1) echo "run_map: input refused: $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["reason"])' "$output/fusion_status.json")" >&2 ;;
  *) echo "run_map: the app failed (status $app_status); its traceback log is in $logs" >&2 ;;
esac
exit "$app_status"
