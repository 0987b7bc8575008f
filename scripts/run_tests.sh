#!/usr/bin/env bash
# Set up the environment (see setup_env.sh) and run the test suite. Extra arguments go to pytest.
# As root on Debian it also installs what the tests of real services need, and then requires those tests
# (DCFB_REQUIRE_SERVICES=1: a missing service fails them instead of skipping them):
#   orthanc (a real PACS on loopback, tests/test_pacs.py), docker.io and debootstrap (the MAP built and run,
#   tests/test_map.py), dicom3tools (the DICOM validator dciodvfy), dcmtk and libgdcm-tools (DICOM transcoded
#   into every transfer syntax, tests/test_dicom_input.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DCFB_NEED_DCIODVFY=1 bash "$root/scripts/setup_env.sh"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v dcmconv >/dev/null || missing+=(dcmtk)
  command -v gdcmconv >/dev/null || missing+=(libgdcm-tools)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[tests] installing Debian packages for the service tests: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  export DCFB_REQUIRE_SERVICES=1
fi
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
