"""Pure-Python work over many items (DICOM files read, DICOM slices written) split across forked processes.

Why processes: pydicom's parsing and encoding, and highdicom's checks, are pure Python and hold the GIL, so threads
would wait on each other; on the 2-core development machine the app's DICOM writing took 3.0-4.4 s of a 15-18 s run
on one core while the other idled. Why ``os.fork`` and not ``multiprocessing``: a forked child shares the parent's
data (the series, the fused volume) without pickling it, and ``multiprocessing.Process``'s start-up and shut-down
expect the fork to come from a Python thread, while Holoscan runs the operators on its own threads, where such a
child ends with exit code 1 before doing anything. A fork copies only the calling thread: the children run this
app's Python, pydicom, highdicom and numpy, never PyTorch or Holoscan (whose threads stay behind), and leave with
``os._exit``, running none of the parent's exit handlers.

Each child sends one JSON answer through a pipe: its part's result, or the kind and text of its error, so that an
input error in a child still refuses the study with its one line (``FusionInputError``), and any other failure is an
internal error naming the part. The parent waits for every child, also when its own part failed, and kills a child
that stays silent past a time limit; a child dies with its parent (a cancelled job): no child outlives the call.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import FusionInputError

logger = logging.getLogger(__name__)

MAX_PROCESSES = 4


def available_processes(n_items: int, min_items_per_process: int) -> int:
    """How many processes are worth forking for ``n_items``: the CPUs this process may use (at most
    ``MAX_PROCESSES``), fewer when each would get under ``min_items_per_process``, 1 where there is no ``os.fork``."""
    if not hasattr(os, "fork"):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_PROCESSES, n_items // max(1, min_items_per_process)))


def contiguous_parts(n_items: int, processes: int) -> list[range]:
    """``range(n_items)`` cut into at most ``processes`` contiguous, non-empty parts of near-equal length."""
    count = max(1, min(processes, n_items))
    bounds = [round(i * n_items / count) for i in range(count + 1)]
    return [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _die_with(parent: int) -> None:
    """In a child: be killed when the parent dies (a platform that cancels the job kills the app, and no child may
    go on writing after it). Linux's PR_SET_PDEATHSIG; elsewhere nothing is done."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _fork(work: Callable[[range], Any], part: range) -> tuple[int, int]:
    """Fork a child that runs ``work(part)`` and answers through a pipe; returns (its pid, the pipe's read end)."""
    receive, send = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(receive)
        os.close(send)
        raise
    if pid:
        os.close(send)
        return pid, receive
    status = 1
    try:
        os.close(receive)
        _die_with(parent)
        try:
            answer = ["done", work(part)]
        except FusionInputError as err:
            answer = ["input", str(err)]
        except Exception as err:  # noqa: BLE001 - every failure goes back to the parent, which raises it
            answer = ["internal", f"{type(err).__name__}: {err}"[:2000]]
        data = json.dumps(answer).encode()
        while data:  # a result larger than the pipe's buffer is written as the parent reads it
            data = data[os.write(send, data):]
        status = 0
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)


def _answer(pid: int, receive: int, time_limit: float) -> list:
    """The child's answer (["done", result] or [kind, message]), once it has ended; killed when silent for
    ``time_limit`` seconds."""
    chunks, deadline = [], time.monotonic() + time_limit
    with os.fdopen(receive, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ["internal", f"no answer within {time_limit:.0f} s"]
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return ["internal", f"the process ended without an answer (exit status {os.waitstatus_to_exitcode(status)})"]
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return ["internal", "the process's answer could not be read"]


def run_in_forked_parts(work: Callable[[range], Any], n_items: int, processes: int, what: str,
                        seconds_per_item: float, min_seconds: float = 60.0) -> list:
    """``[work(part) for part in contiguous_parts(n_items, processes)]``, the first part here and each other one in a
    forked child (its result must be JSON-serialisable, and comes back as JSON gives it). ``what`` names the work
    in the log and in errors ("writing slices", "checking files"). A child that has not answered after
    ``seconds_per_item`` per item (at least ``min_seconds``) is stuck, not slow: it is killed and its part reported
    failed. A part for which no process can be forked (a container's process limit, memory) is done here.

    Raises ``FusionInputError`` when a child refused its input, else ``RuntimeError`` when a child failed (naming
    its items, 1-based), after every child has ended; an error in this process's own part is raised as it is."""
    parts = contiguous_parts(n_items, processes)
    if len(parts) <= 1:
        return [work(parts[0] if parts else range(0))]
    logger.info("%s: %d in %d processes", what, n_items, len(parts))
    for stream in (sys.stdout, sys.stderr):  # or the children would print again what is still buffered here
        stream.flush()
    results: list = [None] * len(parts)
    children, here = [], [0]
    try:
        for index, part in enumerate(parts[1:], start=1):
            try:
                children.append((*_fork(work, part), index))
            except OSError as err:
                logger.warning("%s: no process could be forked (%s): this one does %d more", what,
                               err.strerror or err, len(part))
                here.append(index)
        for index in here:
            results[index] = work(parts[index])
    finally:
        answers = [(_answer(pid, receive, max(min_seconds, seconds_per_item * len(parts[index]))), index)
                   for pid, receive, index in children]
    for (kind, message), _ in answers:
        if kind == "input":
            raise FusionInputError(message)
    for (kind, message), index in answers:
        if kind != "done":
            part = parts[index]
            raise RuntimeError(f"{what} {part[0] + 1}-{part[-1] + 1} failed in a child process: {message}")
        results[index] = message
    return results
