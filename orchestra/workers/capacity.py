"""How many more runs a worker may take after it ran short of resources.

A start that fails for want of open files, processes or memory
(``runners.base.is_shortage``) puts its run back in the queue (``launching``).
Left at that, the next pass would claim it again at once, fail again, and
spin; and every further run the pool's limit lets it claim would go the same
way. So the worker learns what it can run from what it ran when it fell
short, less a margin (``spare``): the worker itself still needs descriptors,
for a connection to the daemon, a log to read, a client of its API. It claims
no more than that for ``SHORTAGE_HOLD`` seconds; then it
tries its pools' full limits again. Its jobs that end meanwhile make room as
they go, so the runs wait in the queue in their order and start as soon as
there is room, as they would behind a pool's concurrency limit.

The moment a start runs out of descriptors, the pass that says so has none
left for its own write (a remote worker's report opens a connection): so the
process keeps a few in reserve (``RESERVE``, open on ``/dev/null``), lets go of
them when a worker runs short, and takes them again when the spell is over,
the trick servers use to answer a client even when ``accept`` fails.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Callable

log = logging.getLogger("orchestra.worker")

SHORTAGE_HOLD = 10.0  # seconds a worker that ran short keeps to what it ran then
WARN_EVERY = 600.0  # seconds: a shortage that lasts is a warning this often, the spells between it INFO lines
SPARE_MIN = 2  # jobs fewer than ran at the shortage, at least: room for the worker's own files and sockets
RESERVE = 8  # descriptors kept for the moment a worker runs short (see the module doc)

_reserve: list[int] = []  # for the whole process: every worker's shortage is the process's
_reserve_lock = threading.Lock()


def keep_reserve() -> None:
    """Hold ``RESERVE`` descriptors (as many as can be had: none is taken from a job)."""
    with _reserve_lock:
        while len(_reserve) < RESERVE:
            try:
                _reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return


def release_reserve() -> None:
    """Let go of the reserve: what follows the shortage needs descriptors of its own."""
    with _reserve_lock:
        while _reserve:
            os.close(_reserve.pop())


class Capacity:
    """The most jobs a worker may run at once: no bound until it runs short."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limit: int | None = None
        self._until = 0.0
        self._warned: float | None = None  # when the last warning was logged
        keep_reserve()

    def ran_short(self, running: int, err: OSError) -> None:
        """A start failed for want of ``err``'s resource while ``running`` jobs ran."""
        release_reserve()
        first = self._limit is None
        self._limit = max(0, running - spare(running))
        self._until = self._clock() + SHORTAGE_HOLD
        if first:
            now = self._clock()
            warn = self._warned is None or now - self._warned >= WARN_EVERY
            if warn:
                self._warned = now
            log.log(logging.WARNING if warn else logging.INFO,
                    "cannot start more jobs: %s%s; this worker runs at most %d at once for the next %.0fs, "
                    "and the runs it could not start wait in the queue", err.strerror or err, _hint(err),
                    self._limit, SHORTAGE_HOLD)

    def room(self, running: int, wanted: int) -> int:
        """How many of ``wanted`` runs a claim may take while ``running`` jobs run."""
        if self._limit is None:
            return wanted
        if self._clock() >= self._until:
            log.info("trying again to start jobs beyond %d at once", self._limit)
            self._limit = None
            keep_reserve()
            return wanted
        return max(0, min(wanted, self._limit - running))


def spare(running: int) -> int:
    """How many fewer jobs than ``running`` a worker that ran short runs: a tenth, at least ``SPARE_MIN``."""
    return max(SPARE_MIN, running // 10)


def _hint(err: OSError) -> str:
    """What to change, for the shortage an operator can lift."""
    if err.errno == errno.EMFILE:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return (f" (this process may have {soft} files open: raise its limit, e.g. LimitNOFILE= "
                "in its systemd unit, or ulimit -n before it starts)")
    if err.errno == errno.EAGAIN:
        return " (a limit on processes: ulimit -u, or the container's pids limit)"
    return ""
