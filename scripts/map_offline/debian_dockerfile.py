#!/usr/bin/env python3
"""Adapt the Dockerfile that ``monai-deploy package`` (holoscan-cli 4.2.0) writes to the offline Debian base image.

    python3 debian_dockerfile.py PATH/Dockerfile        (rewrites it in place; run by the buildx stand-in)

The packager's template assumes an NVIDIA CUDA image on Ubuntu 24.04 with the internet at hand. Each rewrite
below answers one of those assumptions; each must find its target, so that a packager whose template changed
fails here with a message instead of building something else:

1. The NVIDIA apt key is fetched from developer.download.nvidia.com (not reachable; nothing from NVIDIA's apt
   repository is installed for a Python app on a CPU): that RUN is removed.
2. Python is installed with Ubuntu 24.04 version pins (python3-minimal=3.12.3-*, python3-pip=24.0+dfsg-*),
   which no Debian archive has: the pins are dropped (the base image already has Debian 12's Python 3.11).
3. Paths name Python 3.12 (the EXTERNALLY-MANAGED marker it deletes, holoscan's library path): 3.11 here.
4. holoscan's wheel finishes installing itself (wheel-axle-runtime: its library symlinks) from a ``.pth`` file at
   the first Python start after the requirements are installed. When that start is the packager's next
   ``pip install``, pip fails ("cannot import name 'cli' from 'pip._internal.cli.main'"); and on this base the
   ``.pth`` runs before Debian's dist-packages are on ``sys.path``, where the finaliser's ``filelock`` lives (a
   torch dependency, installed with torch), so it fails at every start and ``libholoscan_core.so.4`` never
   appears. One explicit finalisation, after Python has started, right after the requirements, does both.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REQUIREMENTS_RUN = "RUN pip install --no-cache-dir --user -r /tmp/requirements.txt"
FINALIZE_AXLE = ("python3 -c \"import glob, site, wheel_axle.runtime as axle; "
                 "[axle.finalize(p) for p in glob.glob(site.getusersitepackages() + '/*.pth') "
                 "if 'wheel_axle' in open(p).read()]\"")


def instructions(text: str) -> list[str]:
    """The Dockerfile as a list of chunks, each an instruction with its continuation lines (or a comment/blank)."""
    chunks, current = [], []
    for line in text.splitlines(keepends=True):
        current.append(line)
        if not line.rstrip("\n").endswith("\\"):
            chunks.append("".join(current))
            current = []
    if current:
        chunks.append("".join(current))
    return chunks


def adapt(text: str) -> str:
    chunks = instructions(text)
    done = {"keyring": 0, "pins": 0, "axle": 0}
    out = []
    for chunk in chunks:
        if chunk.startswith("RUN") and "cuda-keyring" in chunk:
            out.append("# [dcfb offline] NVIDIA apt keyring fetch removed: not reachable, and nothing needs it here\n")
            done["keyring"] += 1
            continue
        if chunk.startswith("RUN") and "python3-minimal=${PYTHON_VERSION}" in chunk:
            chunk = re.sub(r"=\$\{PYTHON(_PIP)?_VERSION\}", "", chunk)
            done["pins"] += 1
        chunk = chunk.replace("/usr/lib/python3.12/", "/usr/lib/python3.11/").replace("python3.12/", "python3.11/")
        out.append(chunk)
        if chunk.strip() == REQUIREMENTS_RUN:
            out.append("# [dcfb offline] finish holoscan's wheel install (wheel-axle) before the next pip run\n"
                       f"RUN {FINALIZE_AXLE}\n")
            done["axle"] += 1
    missing = [name for name, count in done.items() if count == 0]
    if missing:
        raise ValueError(f"the packager's Dockerfile changed: no target for the rewrite(s) {', '.join(missing)}")
    return "".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = Path(argv[1])
    try:
        path.write_text(adapt(path.read_text()))
    except (OSError, ValueError) as err:
        print(f"debian_dockerfile: {path}: {err}", file=sys.stderr)
        return 1
    print(f"debian_dockerfile: adapted {path} to the Debian base image", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
