"""The benchmarks' own measurements (their timings are not tested: they are figures, not behaviour)."""

import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

# a process that fills 256 MiB, forks a child that keeps it (copy-on-write, untouched), and waits
HOLDER = """
import os, sys, time
held = bytes(range(256)) * (2**20)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def _rss_gb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc")
def test_the_app_benchmarks_memory_counts_pages_shared_with_a_forked_child_once():
    from benchmark_app import tree_pss_gb

    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(holder.stdout.readline())
        both_rss = _rss_gb(holder.pid) + _rss_gb(child)
        tree = tree_pss_gb(holder.pid)
        assert both_rss > 0.45  # each maps the 256 MiB
        assert 0.24 < tree < 0.35  # together they hold it once (plus two interpreters)
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
        holder.kill()
        holder.wait()
    assert tree_pss_gb(holder.pid) == 0.0  # gone: nothing to read, no error
