#!/usr/bin/env bash
# Run the MONAI Model Zoo's own checks on bundle/ inside a model-zoo checkout, as a contributor's pull request
# would meet them (the project's tests run the same checks offline: tests/test_model_zoo.py).
#   scripts/check_model_zoo.sh /path/to/model-zoo [--hooks-repo /path/to/pre-commit-hooks]
# Copies the bundle in as models/brain_mri_pet_fusion (weights beside it, untracked, as large_files.yml would
# download them), then runs: ci/verify_bundle.py in full mode, ci/unit_tests/runner.py with the bundle's unit
# test, runtests.sh --isort --black --flake8 (the format job without pytype), and pre-commit on the bundle's files.
# --hooks-repo: a local clone of github.com/pre-commit/pre-commit-hooks, for a machine without GitHub access
# (pre-commit clones the hooks of the Zoo's .pre-commit-config.yaml; the copy of that config points at the clone).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PY:-$root/.venv/bin/python}"
[ $# -ge 1 ] && [ -f "$1/ci/verify_bundle.py" ] || { echo "usage: $0 /path/to/model-zoo [--hooks-repo DIR]" >&2; exit 2; }
zoo="$(cd "$1" && pwd)"; shift
hooks_repo=""
if [ "${1:-}" = "--hooks-repo" ]; then hooks_repo="$(cd "$2" && pwd)"; fi
name=brain_mri_pet_fusion
dst="$zoo/models/$name"
bin="$(dirname "$py")"

echo "[zoo] copying bundle/ to $dst"
rm -rf "$dst"
mkdir -p "$dst"
(cd "$root/bundle" && git ls-files --cached --others --exclude-standard | grep -vE '^models/.*\.(pt|ts)$|^eval/' \
    | tar -cf - -T -) | tar -xf - -C "$dst"
cp "$root"/bundle/models/model.pt "$root"/bundle/models/model.ts "$dst/models/"
# ci/prepare_schema.py downloads the schema named in metadata.json to eval/schema.json; the same file, offline
mkdir -p "$dst/eval"
cp "$root/tests/model_zoo/meta_schema_20240725.json" "$dst/eval/schema.json"
cd "$zoo"
export PATH="$bin:$PATH" MONAI_MODEL_ZOO_PY_EXE="$py"

step() { echo; echo "[zoo] $*"; }
step "ci/verify_bundle.py -b $name -m full"
(cd ci && "$py" verify_bundle.py -b "$name" -p "$zoo/models" -m full)
rm -f "$dst/models/verify_model.ts"

step "ci/unit_tests/runner.py --b $name"
cp "$root/tests/model_zoo/test_$name.py" ci/unit_tests/
"$py" ci/unit_tests/runner.py --b "$name"

step "runtests.sh --isort --black --flake8"
# runtests.sh first runs `python -W error -c "import monai"`; in this project's environment monai also imports the
# App SDK's holoscan, which warns under the default 8 MB stack: give it the 32 MB it asks for
(ulimit -s 32768 && ./runtests.sh --isort --black --flake8)

step "pre-commit (the Zoo's .pre-commit-config.yaml) on the bundle's files"
git add "models/$name" ":!models/$name/models/*.pt" ":!models/$name/models/*.ts" ":!models/$name/eval" \
    "ci/unit_tests/test_$name.py"
config=$(mktemp --suffix=.yaml)
cp .pre-commit-config.yaml "$config"
if [ -n "$hooks_repo" ]; then
    sed -i "s#https://github.com/pre-commit/pre-commit-hooks#$hooks_repo#" "$config"
fi
# the Zoo's config asks for python3.8 for the hooks' environment; where there is none, the hooks (pure Python)
# run under this machine's python3
if ! python3.8 -c pass >/dev/null 2>&1; then
    sed -i "s#python: python3.8#python: python3#" "$config"
fi
files=$(git diff --cached --name-only)
# shellcheck disable=SC2086
"$bin/pre-commit" run -c "$config" --files $files
if ! git diff --quiet -- "models/$name"; then
    echo "[zoo] pre-commit changed the bundle:" >&2
    git diff --stat -- "models/$name" >&2
    exit 1
fi
echo
echo "[zoo] all Model Zoo checks passed for $name"
