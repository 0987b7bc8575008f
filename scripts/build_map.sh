#!/usr/bin/env bash
# Build the MONAI Application Package (MAP): a container image of deploy_app/ with the bundle as its model,
# made by `monai-deploy package` (holoscan-cli 4.2.0).
#   bash scripts/build_map.sh [--offline] [--no-cache]
# Standard route: NVIDIA's base image from nvcr.io and the packager's artifact manifest from GitHub.
# --offline (taken by itself when nvcr.io cannot be reached): everything made on this Debian machine, each step
# said as it runs (see scripts/map_offline/ for what each workaround answers):
#   Debian's Docker daemon (docker.io) installed and started if none runs;
#   a Debian 12 base image from debootstrap with Python 3.11 and the CPU torch (map_offline/make_base_image.sh);
#   the packager's artifact manifest from a local file (map_offline/artifacts.json) naming that base image;
#   a buildx stand-in on the daemon's classic builder (map_offline/docker-buildx);
#   the packager's Ubuntu/NVIDIA Dockerfile adapted to the Debian base (map_offline/debian_dockerfile.py).
# The app's requirements (deploy_app/requirements.txt) come from PyPI while the image builds.
# Prints the image tag and the build time; MAP_TAG_FILE (default build/map/image) receives the tag.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
offline=0 extra=()
for arg in "$@"; do
  case "$arg" in
    --offline) offline=1 ;;
    --no-cache) extra+=(--no-cache) ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build_map: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
say() { echo "[build_map] $*"; }

bash "$root/scripts/setup_env.sh"
venv="${DCFB_VENV:-$root/.venv}"
export PATH="$venv/bin:$PATH"

if [ "$offline" = 0 ] && ! curl -s --max-time 10 -o /dev/null https://nvcr.io/v2/; then
  say "nvcr.io cannot be reached: building offline"
  offline=1
fi

if ! docker info >/dev/null 2>&1; then
  [ "$offline" = 1 ] && [ "$(id -u)" = 0 ] || { echo "build_map: no Docker daemon runs (start one, or run as root with --offline)" >&2; exit 1; }
  if ! command -v dockerd >/dev/null; then
    say "installing Debian's Docker daemon (docker.io)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  # runc registered as `nvidia` too: `monai-deploy run` always asks for the nvidia runtime, even for a CPU app.
  say "starting dockerd with runc also registered as the nvidia runtime (log: /var/log/dcfb-dockerd.log)"
  nohup dockerd --add-runtime nvidia=runc > /var/log/dcfb-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dcfb-dockerd.log >&2; echo "build_map: dockerd did not start" >&2; exit 1; }
fi

stage="$root/build/map"
bash "$root/scripts/prepare_map.sh" "$root/bundle" "$stage" >/dev/null
say "staged the bundle as the MAP's model folder: $stage/models/dcfb_fusion"
timeout_s="$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["application"]["timeout"])' "$root/deploy_app/app.yaml" 2>/dev/null \
  || "$venv/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["application"]["timeout"])' "$root/deploy_app/app.yaml")"
# `timeout` in app.yaml is not read by the packager (holoscan-cli 4.2.0): only `package --timeout` sets it.
args=("$root/deploy_app" -c "$root/deploy_app/app.yaml" -m "$stage/models" -t dcfb-fusion --platform x86_64
      --timeout "$timeout_s" -l INFO "${extra[@]}")

if [ "$offline" = 1 ]; then
  [ "$(id -u)" = 0 ] || command -v debootstrap >/dev/null || { echo "build_map: --offline needs root and debootstrap" >&2; exit 1; }
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  base_start=$(date +%s)
  bash "$root/scripts/map_offline/make_base_image.sh"
  base_s=$(( $(date +%s) - base_start ))
  # A private Docker client configuration holds the buildx stand-in, so the machine's own setup is untouched.
  export DOCKER_CONFIG="$stage/docker-config"
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  [ -f "$HOME/.docker/config.json" ] && cp "$HOME/.docker/config.json" "$DOCKER_CONFIG/"
  install -m 755 "$root/scripts/map_offline/docker-buildx" "$DOCKER_CONFIG/cli-plugins/docker-buildx"
  export DCFB_DOCKERFILE_FILTER="python3 $root/scripts/map_offline/debian_dockerfile.py"
  say "buildx stand-in in $DOCKER_CONFIG; artifact manifest scripts/map_offline/artifacts.json"
  args+=(--source "$root/scripts/map_offline/artifacts.json")
else
  base_s=0
fi

say "monai-deploy package ${args[*]}"
log="$stage/package.log"
set +e
monai-deploy package "${args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
tag="$(grep -oE 'dcfb-fusion-[a-z0-9_.-]+:[0-9][0-9A-Za-z.+-]*' "$log" | tail -1 || true)"
if [ "$status" != 0 ] || [ -z "$tag" ] || ! docker image inspect "$tag" >/dev/null 2>&1; then
  echo "build_map: the packager failed (log: $log)" >&2
  exit 1
fi
echo "$tag" > "${MAP_TAG_FILE:-$stage/image}"
total=$(( $(date +%s) - start ))
say "MAP $tag built in $total s (base image step $base_s s); size $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
