"""Who a local worker is, and whether it is still alive.

A local worker (the daemon's in-process worker) names itself
``local:<hostname>:<pid>:<process start time>``. The start time (clock ticks
after boot, from ``/proc``) makes the name unique for the life of the host:
when a daemon is killed and its PID later reused, the new process has another
start time, so a restarted daemon can tell for certain that the worker named
on a run is gone. ``LocalWorker.recover`` and the orphan check of
``LocalWorker.step`` call ``local_worker_alive``; the daemon calls
``worker_identity`` once at start.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

LOCAL_PREFIX = "local:"
UNKNOWN_START = "?"  # no /proc (not Linux): liveness falls back to "does the PID exist"


@dataclass(frozen=True)
class LocalWorkerId:
    host: str
    pid: int
    start: str

    def format(self) -> str:
        return f"{LOCAL_PREFIX}{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, worker: str) -> LocalWorkerId | None:
        """The parts of a local worker's name; None for any other kind of worker."""
        if not worker.startswith(LOCAL_PREFIX):
            return None
        # Host names never contain ':', so splitting from the right is unambiguous.
        parts = worker[len(LOCAL_PREFIX):].rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
            return None
        return cls(parts[0], int(parts[1]), parts[2])


def worker_identity() -> str:
    """This process's worker name: ``local:<hostname>:<pid>:<process start time>``."""
    pid = os.getpid()
    return LocalWorkerId(socket.gethostname(), pid, _start_time(pid) or UNKNOWN_START).format()


def local_worker_alive(worker: str) -> bool | None:
    """True or False for a local worker of this host; None when this host cannot
    tell (a worker of another host or another kind: only its lease can say)."""
    parsed = LocalWorkerId.parse(worker)
    if parsed is None or parsed.host != socket.gethostname():
        return None
    if parsed.start == UNKNOWN_START:
        return pid_exists(parsed.pid)
    stat = _read_stat(parsed.pid)
    if stat is None or stat[0] in "ZXx":  # a zombie daemon is a dead daemon
        return False
    return stat[1] == parsed.start


def _start_time(pid: int) -> str | None:
    stat = _read_stat(pid)
    return stat[1] if stat else None


def _read_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) from ``/proc/<pid>/stat``; None if no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), fields[19].decode()


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists here (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
