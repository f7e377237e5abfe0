"""What escapes a finished job's process group is found by its run id, and ended.

A job's processes live in the job's own session and process group, which the
process runner kills when the job's main process exits. A process can leave
that group: ``setsid``, a daemonizing double fork, ``nohup cmd & disown``
under a shell that gives it a group of its own. It would outlive its run,
unseen (systemd and Nomad reach such a process through a cgroup, Kubernetes
through the container; a plain process has neither). Every job carries
``ORCHESTRA_RUN_ID`` in its environment, and its processes inherit it, so a
second or so after a job ends (ends close together share one look through
``/proc``), every process that carries the run id is killed with its group,
if it started no later than the job ended (a later attempt of the same run is
not touched) and is not part of a job that still runs here. It is looked for
twice, for a process whose parent forked it while the group was being killed.

A process that cleared its environment (``env -i``), or that runs as another
user, is out of reach; so is one that a leftover starts after the job ended
and that leaves its group again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass

log = logging.getLogger("orchestra.runners.process")

SWEEP_DELAY = 1.0  # seconds from a job's end to the look for its leftovers, and between looks
SHARE_AFTER = 0.5  # seconds a job must have ended before a look that another job's end brought
LOOKS = 2  # looks per ended job
_TICKS = os.sysconf("SC_CLK_TCK")
_NEEDLE = b"\0ORCHESTRA_RUN_ID="


def boot_ticks() -> int:
    """Now, in the clock ticks after boot that ``/proc/<pid>/stat`` counts start times in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


@dataclass
class _Ended:
    end_ticks: int
    looks_left: int
    next_look: float  # monotonic time


@dataclass(frozen=True)
class Leftover:
    pid: int
    group: int
    run_id: str


class Leftovers:
    """Ended jobs whose escaped processes are still to be looked for. Not thread-safe:
    the process pump owns it (under its working lock) and sweeps from its own thread.

    A job's first look comes ``SWEEP_DELAY`` after its end; jobs that ended at least
    ``SHARE_AFTER`` before a look share it, and are looked at again ``SWEEP_DELAY`` later.
    """

    def __init__(self) -> None:
        self._ended: dict[str, _Ended] = {}
        self._due: float | None = None  # the earliest next look; asked at every pass of a burst

    def note(self, run_id: str, end_ticks: int) -> None:
        """A job of ``run_id`` ended at ``end_ticks`` (its group already killed)."""
        entry = _Ended(end_ticks, LOOKS, time.monotonic() + SWEEP_DELAY)
        self._ended[run_id] = entry
        if self._due is None:  # entries noted later are due later
            self._due = entry.next_look

    def pending(self) -> bool:
        return bool(self._ended)

    def due_in(self, now: float) -> float | None:
        """Seconds until the next look; None if there is nothing to look for."""
        return None if self._due is None else max(0.0, self._due - now)

    def sweep_if_due(self, now: float, live_sessions: Collection[int]) -> list[Leftover]:
        """Kill what the ended jobs left behind (see the module doc), unless it belongs to
        ``live_sessions`` (the sessions of jobs still running here); what was killed."""
        due_in = self.due_in(now)
        if due_in is None or due_in > 0:
            return []
        share = now + SWEEP_DELAY - SHARE_AFTER
        looked = {run_id: entry for run_id, entry in self._ended.items() if entry.next_look <= share}
        found = find(looked, live_sessions) if looked else []
        for item in found:
            _kill(item)
        for run_id, entry in looked.items():
            entry.looks_left -= 1
            entry.next_look = now + SWEEP_DELAY
            if entry.looks_left <= 0:
                del self._ended[run_id]
        self._due = min((entry.next_look for entry in self._ended.values()), default=None)
        if found:
            log.info("killed %d process(es) that outlived their job outside its process group: %s",
                     len(found), ", ".join(f"pid {item.pid} (run {item.run_id})" for item in found))
        return found


def find(ended: dict[str, _Ended], live_sessions: Collection[int]) -> list[Leftover]:
    """The processes (of this user) that carry the run id of an ended job and started no
    later than it ended, outside the sessions still running here and this process's group."""
    own = os.getpid(), os.getpgrp()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in own:
            continue
        run_id = _run_id(int(name))
        entry = ended.get(run_id) if run_id is not None else None
        if entry is None:
            continue
        stat = _stat(int(name))
        if stat is None or stat[0] in "ZXx" or stat[3] > entry.end_ticks:
            continue
        state, group, session, _ = stat
        if session in live_sessions or group == own[1]:
            continue
        found.append(Leftover(int(name), group, run_id or ""))
    return found


def _run_id(pid: int) -> str | None:
    """The ``ORCHESTRA_RUN_ID`` a process started with; None if it has none or cannot be read."""
    try:
        environ = b"\0" + _read(f"/proc/{pid}/environ")
    except OSError:  # gone meanwhile, or another user's
        return None
    start = environ.find(_NEEDLE)
    if start < 0:
        return None
    start += len(_NEEDLE)
    end = environ.find(b"\0", start)
    return environ[start:end if end >= 0 else len(environ)].decode(errors="replace")


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """State, process group, session and start time (ticks after boot)."""
    try:
        raw = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # comm may hold spaces and parentheses
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kill(item: Leftover) -> None:
    """SIGKILL the leftover's group (what it started stays with it), or the process alone
    if its group is not its own to end."""
    try:
        if item.group > 1:
            os.killpg(item.group, signal.SIGKILL)
        else:
            os.kill(item.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
