"""Jobs made ahead and held until their runs start (``Launcher.prepare``).

A runner that can (``ProcessRunner.hold``) makes a due run's process while the
worker waits for the due time, held before ``exec``; the start then releases
it, which in a burst of short jobs is most of what a start used to cost the
loop's thread. Each held job belongs to one render of one run: it is used
only by a start of that very render, and dropped (its process ended, never
having run the job) when the run starts otherwise, when it has waited past
its time, or when the worker stops.
"""

from __future__ import annotations

import logging
import math
import resource
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from orchestra.jobs.template import RenderedJob

log = logging.getLogger("orchestra.worker")

HOLD_LIMIT = 1000  # held at most: each a waiting process (~170 KiB) and two of the daemon's descriptors
HELD_JOB_BYTES = 256 * 1024  # memory a held job may take: a waiting dash measured ~110 KiB private + ~60 KiB kernel
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
PROC_MEMINFO = "/proc/meminfo"
HOLD_PAST_DUE = 10.0  # seconds a held job may wait past its due time before it is dropped


class Held(Protocol):
    """What a runner's ``hold`` returns."""

    def drop(self) -> None: ...


@dataclass(frozen=True)
class _Entry:
    rendered: RenderedJob
    held: Held
    expires: float  # time.monotonic()


class HeldJobs:
    """The held jobs of one worker, by run id; thread-safe (the prepare thread adds, the loop takes)."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = hold_budget() if limit is None else limit
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._next_expiry = math.inf  # no earlier: every pass asks, so most must cost one comparison

    def room(self) -> bool:
        with self._lock:
            return len(self._entries) < self._limit

    def add(self, run_id: str, rendered: RenderedJob, held: Held, due_in: float) -> None:
        entry = _Entry(rendered, held, time.monotonic() + due_in + HOLD_PAST_DUE)
        with self._lock:
            replaced = self._entries.pop(run_id, None)
            self._entries[run_id] = entry
            self._next_expiry = min(self._next_expiry, entry.expires)
        if replaced is not None:
            replaced.held.drop()

    def take(self, run_id: str, rendered: RenderedJob) -> Held | None:
        """The run's held job if it was made from ``rendered`` itself; a held job made
        from another render (the deployment changed since) is dropped."""
        with self._lock:
            entry = self._entries.pop(run_id, None)
        if entry is None:
            return None
        if entry.rendered is not rendered:
            entry.held.drop()
            return None
        return entry.held

    def drop_expired(self) -> None:
        """Drop the held jobs whose runs did not start in time (claimed elsewhere, cancelled)."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        with self._lock:
            expired = [run_id for run_id, entry in self._entries.items() if entry.expires <= now]
            dropped = [self._entries.pop(run_id) for run_id in expired]
            self._next_expiry = min((entry.expires for entry in self._entries.values()), default=math.inf)
        self._drop(dropped)

    def drop_all(self) -> None:
        with self._lock:
            dropped = list(self._entries.values())
            self._entries.clear()
            self._next_expiry = math.inf
        self._drop(dropped)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _drop(entries: list[_Entry]) -> None:
        for entry in entries:
            try:
                entry.held.drop()
            except OSError as err:  # it is ended either way: the daemon's copy of its pipe is closed
                log.debug("dropping a held job: %s", err)


def hold_budget() -> int:
    """``HOLD_LIMIT``, or fewer where this process may have few descriptors, its
    container few processes or the machine little memory: held jobs take at most
    an eighth of each (two descriptors, one process and ``HELD_JOB_BYTES`` each),
    the rest stays for running jobs and their children, the store and the API.
    A thousand held jobs take about 170 MB for the seconds before their boundary."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = HOLD_LIMIT if soft == resource.RLIM_INFINITY else min(HOLD_LIMIT, soft // 16)
    pids = _cgroup_limit("pids", "pids.max")
    if pids is not None:
        budget = min(budget, pids // 8)
    memory = _memory_room()
    if memory is not None:
        budget = min(budget, memory // 8 // HELD_JOB_BYTES)
    return max(0, budget)


def _memory_room() -> int | None:
    """Bytes this process's jobs may still use: the machine's available memory, or
    less if its cgroup has a memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    room = _available_memory()
    limit = _cgroup_limit("memory", "memory.max", "memory.limit_in_bytes")
    if limit is None:
        return room
    left = max(0, limit - (_cgroup_limit("memory", "memory.current", "memory.usage_in_bytes") or 0))
    return left if room is None else min(room, left)


def _available_memory() -> int | None:
    try:
        with open(PROC_MEMINFO) as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit(controller: str, v2_name: str, v1_name: str | None = None) -> int | None:
    """A number from this process's cgroup (v2, or v1's ``controller``): ``v2_name``
    or ``v1_name``; None where there is none, or it reads "max" (no limit)."""
    try:
        with open(PROC_CGROUP) as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            directory, name = f"{CGROUP_ROOT}/{controller}", v1_name or v2_name
        elif controllers == "":
            directory, name = CGROUP_ROOT, v2_name
        else:
            continue
        try:
            with open(f"{directory}{path.rstrip('/')}/{name}") as file:
                value = file.read().strip()
        except OSError:
            continue
        if value.isdigit():  # else "max": no limit
            return int(value)
    return None
