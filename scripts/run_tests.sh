#!/usr/bin/env bash
# Set up the environment (see setup_env.sh) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DCFB_NEED_DCIODVFY=1 bash "$root/scripts/setup_env.sh"
cd "$root"
set +e
"${DCFB_VENV:-$root/.venv}/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "run_tests: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
