"""Keep freed memory in the process for reuse (glibc's allocator), part of the app's CPU fast path.

Why: glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it with
``munmap`` when freed, so each large tensor of a forward pass (a feature map of a whole head is 60-130 MB) starts on
pages the kernel has to fault in and zero again. On the 2-core development machine that was about a third of the
network's pass over a whole head: 2.85-2.96 s against 1.82-1.93 s with freed memory kept (one pass, in a worker
thread as in the app; ``scripts/benchmark_app.py`` gives the whole app). The cost is a higher peak of resident memory
(freed blocks stay in the heap, and fragment): about +0.4 GB in that pass. No Python-level allocator does this for
PyTorch's CPU tensors (its caching allocator is for GPUs), hence the three ``mallopt`` calls.

Called by ``deploy_app/__main__.py`` before the heavy imports, so that every thread created after it (Holoscan's
workers, which run the operators) shares the main arena. ``DCFB_CPU_OPTIMIZE=0`` turns it off with the rest of the
CPU fast path. Elsewhere than glibc (musl, macOS) nothing is changed and the app says so.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's malloc.h parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# what keep_freed_memory() did, for the log and fusion_summary.json (None: not asked)
policy: str | None = None


def cpu_fast_path_enabled() -> bool:
    """``DCFB_CPU_OPTIMIZE``: on unless set to 0, false, no or off."""
    return os.environ.get("DCFB_CPU_OPTIMIZE", "1").strip().lower() not in ("0", "false", "no", "off")


def keep_freed_memory() -> str:
    """Ask glibc to keep freed memory for reuse: no ``mmap`` for large blocks, no trimming of the heap below 2 GiB
    of free space at its top, one arena for all threads. Returns what was done, in words (also kept in ``policy``)."""
    global policy
    if not sys.platform.startswith("linux"):
        policy = f"not changed ({sys.platform} has no glibc allocator)"
        return policy
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        policy = "not changed (no glibc mallopt)"
        return policy
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    accepted = [mallopt(param, value) == 1 for param, value in
                ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))]
    policy = ("freed memory kept for reuse (glibc mallopt: no mmap for large blocks, no heap trimming, one arena)"
              if all(accepted) else f"not changed (mallopt refused: {accepted})")
    return policy
