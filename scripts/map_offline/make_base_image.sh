#!/usr/bin/env bash
# Make the MAP's base image on a Debian machine without a container registry: Debian 12 from debootstrap,
# Python 3.11, the CPU build of torch 2.13.0, the CUDA runtime library, and the machine's own extra CA
# certificates (a site whose outbound HTTPS goes through an inspecting proxy needs them inside the image to
# reach PyPI while building).
# Why: the standard base image (nvcr.io/nvidia/cuda) comes from NVIDIA's registry, which is not reachable.
#   bash scripts/map_offline/make_base_image.sh [TAG]      (default: the tag in scripts/map_offline/artifacts.json)
# Needs root (debootstrap, chroot), debootstrap, a running Docker daemon, and the Debian archive.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag="${1:-$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["4.2.0"]["holoscan"]["base-images"]["dgpu"])' "$here/artifacts.json")}"
mirror="${DCFB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
torch_pin="torch==2.13.0"
# holoscan-cu13's core library links libcudart.so.13, which NVIDIA's CUDA base image provides; here NVIDIA's
# PyPI wheel of the runtime does (it loads without a GPU; the app then runs on the CPU).
cudart_pin="nvidia-cuda-runtime==13.0.96"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "[base] $tag is there already"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "[base] making $tag needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "[base] debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

work="$(mktemp -d /var/tmp/dcfb-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "[base] debootstrap Debian 12 (bookworm, minbase, Python 3.11) from $mirror"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,curl,jq \
  bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; echo "[base] debootstrap failed (log above)" >&2; exit 1; }

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  echo "[base] adding this machine's extra CA certificates: $(cd /usr/local/share/ca-certificates && ls *.crt | tr '\n' ' ')"
  cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
  chroot "$work/rootfs" update-ca-certificates >/dev/null
fi

echo "[base] $torch_pin, the CPU build"
python3 -m pip download -q --disable-pip-version-check "$torch_pin" -d "$work/rootfs/tmp/wheels"
if ! ls "$work/rootfs/tmp/wheels"/torch-*+cpu-*.whl >/dev/null 2>&1; then
  # This machine's pip resolved the CUDA build (no local CPU wheel): take the CPU build from PyTorch's index.
  rm -f "$work/rootfs/tmp/wheels"/torch-*.whl
  python3 -m pip download -q --disable-pip-version-check --no-deps "$torch_pin" \
    --index-url https://download.pytorch.org/whl/cpu -d "$work/rootfs/tmp/wheels"
fi
echo "[base] $cudart_pin (libcudart.so.13, which holoscan's core library links)"
python3 -m pip download -q --disable-pip-version-check --no-deps "$cudart_pin" -d "$work/rootfs/tmp/wheels"
# env -i: the host's PIP_* settings (local wheel folders) mean nothing inside the new root
chroot "$work/rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  python3 -m pip install -q --break-system-packages --no-index --find-links /tmp/wheels "$torch_pin" "$cudart_pin"
cudart="$(cd "$work/rootfs" && find usr/local/lib -name 'libcudart.so.13*' | head -1)"
[ -n "$cudart" ] || { echo "[base] libcudart.so.13 not found in $cudart_pin" >&2; exit 1; }
echo "/$(dirname "$cudart")" > "$work/rootfs/etc/ld.so.conf.d/cuda-runtime.conf"
chroot "$work/rootfs" ldconfig
rm -rf "$work/rootfs/tmp/wheels" "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*

echo "[base] importing into Docker as $tag"
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "[base] $tag made in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
