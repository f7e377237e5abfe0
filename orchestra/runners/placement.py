"""Where a released held job first runs: on another core than the thread releasing it.

A held job waits on a pipe; the worker's loop releases it with one write. The
kernel wakes the job on the writer's core (a pipe's wake-up says the writer
will sleep soon), and the job, having slept long, runs first: the loop stopped
there for 0.45-1 ms in about a quarter of a burst's releases, while the other
core was as busy as this one. So the job's CPU mask leaves out the loop's core
for the instant of the wake-up, and gets back its whole mask right after: the
wake-up places it elsewhere, and from then on it may run anywhere, as any job.
(``bench/bench_daemon.py``: a mean ratio of 0.55 against 0.51 over 30 interleaved
bursts each, see docs/performance.md.)

The mask is given back before the job can have used the narrow one: the
job's process is still the holding shell, which reads its line, then
``exec``s the job, which only then can start threads or processes, or set a
mask of its own. A give-back that came late (about a third come after more
than 20 µs in a burst: the write waits for the interpreter lock) first checks
that the shell is still there; if the job ran meanwhile (once or twice in a
burst of 200), every thread of the job and of what it started that still has
the narrow mask gets the whole one, and a mask the job set itself is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
from collections.abc import Callable, Collection

__all__ = ["job_cpus", "wake_elsewhere"]

log = logging.getLogger(__name__)

# Much less than a shell takes to read a line and ``exec`` a program that then makes
# a thread: a give-back sooner than this after the wake-up came before any of it.
SURELY_BEFORE_EXEC_NS = 20_000
_MAX_DESCENDANTS = 10_000  # a bound on the walk, far above what a job starts in microseconds


def _sched_getcpu() -> Callable[[], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = []
    return function


_GETCPU = _sched_getcpu()


def job_cpus(pid: int) -> frozenset[int] | None:
    """The CPU mask process ``pid`` has now (the one it gets back once woken); None where
    masks cannot be read or changed here, or there is only one CPU to run on."""
    if _GETCPU is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = frozenset(os.sched_getaffinity(pid))
    except OSError:
        return None
    return cpus if len(cpus) > 1 else None


def wake_elsewhere(pid: int, cpus: frozenset[int] | None, wake: Callable[[], object],
                   still_waiting: Callable[[int], bool]) -> None:
    """Call ``wake`` (which lets process ``pid`` run) with ``pid`` kept off this thread's
    core, then give it back ``cpus``. ``still_waiting(pid)`` says whether it has not yet
    run what it was woken for. Whatever fails here only costs the placement."""
    away = _away_from_here(pid, cpus)
    if away is None or cpus is None:
        wake()
        return
    began = time.perf_counter_ns()
    try:
        wake()
    finally:
        if time.perf_counter_ns() - began <= SURELY_BEFORE_EXEC_NS or still_waiting(pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)
        else:
            _give_back_to_job(pid, away, cpus)


def _away_from_here(pid: int, cpus: frozenset[int] | None) -> frozenset[int] | None:
    """Narrow ``pid``'s mask to ``cpus`` without this thread's core; the mask set, or None."""
    if cpus is None or _GETCPU is None:
        return None
    here = _GETCPU()
    away = cpus - {here}
    if not away or away == cpus:  # nowhere else, or this thread runs where the job may not anyway
        return None
    try:
        os.sched_setaffinity(pid, away)
    except OSError:
        return None
    return away


def _give_back_to_job(pid: int, away: frozenset[int], cpus: Collection[int]) -> None:
    """The job ran before its whole mask was back: give it to every thread of the job's
    process and of the processes it started since (they inherited the narrow one), and
    only to those that still have it: a job may have set a mask of its own by now.

    The job's processes are found from its own down (``/proc/<pid>/task/<tid>/children``),
    not by reading every process of the machine (4 ms with a burst's jobs held): a few
    tens of microseconds after its ``exec``, all it started is still its descendant.
    """
    fixed = 0
    pending, seen = [pid], set()
    while pending and len(seen) < _MAX_DESCENDANTS:
        process = pending.pop()
        if process in seen:
            continue
        seen.add(process)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{process}/task"):
                with contextlib.suppress(OSError):
                    if os.sched_getaffinity(int(tid)) == away:
                        os.sched_setaffinity(int(tid), cpus)
                        fixed += 1
                with contextlib.suppress(OSError, ValueError):
                    with open(f"/proc/{process}/task/{tid}/children", "rb") as children:
                        pending += map(int, children.read().split())
    log.debug("job %d ran before its CPU mask was given back; restored it on %d thread(s)", pid, fixed)
