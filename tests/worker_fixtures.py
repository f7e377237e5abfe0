"""Helpers for tests/test_worker_local.py: a store with a process pool, a worker
driven pass by pass, runners that remember what they started, orphans of a "dead daemon".

Everything a test starts is killed in a finalizer; every wait is on a
condition with a deadline, never for time to pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from waiting import wait_for
from store_fixtures import T0, FakeClock, deployment, new_run, pool, queue

from orchestra.runners.process import ProcessHandle, ProcessRunner
from orchestra.store import Run, Store, open_store
from orchestra.workers import LocalWorker, worker_identity

REPO = Path(__file__).resolve().parent.parent
JOBS = Path(__file__).resolve().parent / "jobs"
PY = sys.executable

__all__ = [
    "JOBS", "PY", "T0", "ConcurrentRunner", "Gate", "Orphan", "TrackingRunner", "World", "at", "dead_pid",
    "deployment", "group_is_gone", "is_gone", "new_run", "pool", "queue", "wait_for", "world_fixture",
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _stat(pid: int) -> list[bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].split()


def is_gone(pid: int) -> bool:
    """Dead or a zombie (this container's PID 1 may not reap orphans)."""
    fields = _stat(pid)
    return fields is None or fields[0].decode() in "ZXx"


def group_is_gone(pgid: int) -> bool:
    """No live process is left in the process group."""
    for name in os.listdir("/proc"):
        fields = _stat(int(name)) if name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0].decode() not in "ZXx":
            return False
    return True


class TrackingRunner:
    """A ProcessRunner that remembers every handle it gave out, so tests can find
    the job's process group and the finalizer can kill whatever is left."""

    def __init__(self, base_dir: Path) -> None:
        self.inner = ProcessRunner(base_dir)
        self.handles: dict[str, ProcessHandle] = {}

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, **run: Any) -> ProcessHandle:
        handle = self.inner.start(run_id, job, log_path, **run)
        self.handles[run_id] = handle
        return handle

    def reap_orphan(self, ident: str) -> bool:
        return self.inner.reap_orphan(ident)

    def reap_unrecorded(self, run_id: str) -> bool:
        return self.inner.reap_unrecorded(run_id)

    def validate_job(self, job: dict[str, Any]) -> list[str]:
        return self.inner.validate_job(job)

    def attend(self) -> None:  # as the daemon's ProcessRunner: the passes reap what ended
        self.inner.attend()

    def rest(self) -> None:
        self.inner.rest()

    def close(self) -> None:
        for handle in self.handles.values():
            handle.kill()
        for handle in self.handles.values():
            handle.wait(10)


class ConcurrentRunner(TrackingRunner):
    """The tracking runner, declaring its starts thread-safe (as a runner whose start waits
    on something slow would): the worker starts its jobs in its start threads."""

    concurrent_starts = 8


class Gate:
    """A job command that runs until the gate opens (a file appears), at most 60 s."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "gate-open"

    @property
    def command(self) -> list[str]:
        return self.printing("")

    def printing(self, text: str) -> list[str]:
        """The command, printing ``text`` first (nothing if empty)."""
        wait = 'i=0; while [ ! -e "$1" ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done'
        return ["sh", "-c", f'[ -z "$2" ] || echo "$2"; {wait}', "gate", str(self.path), text]

    def open(self) -> None:
        self.path.touch()


@dataclass
class Orphan:
    """A job a dead 'daemon' left running: its ident, leader pid and a background child."""

    ident: str
    pid: int
    child: int


class World:
    """A store with a process pool, a worker on it, and the means to drive and inspect both."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.clock = FakeClock()
        self.store: Store = open_store(f"sqlite:///{tmp_path / 'orchestra.db'}", clock=self.clock)
        self.runner = TrackingRunner(tmp_path)
        self.woke = threading.Event()
        self.worker = self.make_worker()
        self._orphans: list[Orphan] = []

    def make_worker(self, **kw: Any) -> LocalWorker:
        kw.setdefault("worker_id", worker_identity())
        return LocalWorker(self.store, runners={"process": self.runner}, log_dir=self.tmp / "logs",
                           on_change=self.woke.set, **kw)

    def close(self) -> None:
        self.runner.close()
        for orphan in self._orphans:
            self.runner.reap_orphan(orphan.ident)
        self.store.close()

    # -- setup ------------------------------------------------------------------------

    def apply(self, *writes: Any) -> None:
        self.store.apply_resources(list(writes))

    def run(self, name: str = "job", when: datetime = T0, **kw: Any) -> Run:
        return self.store.create_run(new_run(name, when, **kw))

    def job(self, name: str, command: list[str], **spec: Any) -> None:
        """A deployment ``name`` on pool ``local`` running ``command``."""
        self.apply(deployment(name, command=command, **spec))

    # -- driving ------------------------------------------------------------------------

    def step(self, now: datetime, timeout: float = 10.0) -> datetime | None:
        """A pass, and the passes the daemon makes at once after it until the jobs it
        started are recorded (a start is recorded by the pass after it)."""
        deadline = time.monotonic() + timeout
        wait = self.worker.step(now)
        for _ in range(1000):
            if not self.worker.starting:
                return wait
            if time.monotonic() > deadline:
                break
            self.worker.rest()  # as the daemon's loop before it sleeps
            self.woke.wait(0.05)
            self.woke.clear()
            wait = self.worker.step(now)
        pytest.fail("timed out waiting for the starts to be recorded")

    def step_until(self, predicate: Callable[[], Any], now: datetime, timeout: float = 10.0,
                   what: str = "condition", each: Callable[[], None] = lambda: None) -> Any:
        """Step the worker at ``now`` until ``predicate()`` holds; between passes wait
        for a job to end (the worker's on_change), at most 50 ms."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            self.woke.clear()
            self.worker.step(now)
            each()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                break
            self.worker.rest()  # as the daemon's loop before it sleeps
            self.woke.wait(0.05)
        pytest.fail(f"timed out waiting for {what}")

    def writes(self) -> list[str]:
        """Every write transaction the store begins from now on (a list that grows)."""
        began: list[str] = []
        sa.event.listen(self.store.engine, "before_cursor_execute",
                        lambda *a: began.append(a[2]) if a[2] == "BEGIN IMMEDIATE" else None)
        return began

    def state(self, run: Run) -> str:
        return self.store.get_run(run.id).state

    def reached(self, run: Run, *states: str) -> Callable[[], Run | None]:
        def check() -> Run | None:
            current = self.store.get_run(run.id)
            return current if current.state in states else None
        return check

    def log(self, run: Run) -> str:
        path = self.worker.log_path(run.id)
        return path.read_text() if path.exists() else ""

    def pid(self, run: Run) -> int:
        return self.runner.handles[run.id].pid

    def reasons(self, run: Run) -> list[tuple[str | None, str, str]]:
        return [(e.from_state, e.to_state, e.reason) for e in self.store.events(run.id)]

    # -- a dead daemon --------------------------------------------------------------------

    def orphan(self) -> Orphan:
        """Run tests/jobs/orphan_maker.py: a 'daemon' that starts a job and exits uncleanly."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = self.tmp / f"orphan-{len(self._orphans)}" / "run.log"
        maker = subprocess.run([PY, str(JOBS / "orphan_maker.py"), str(log), "exit"], env=env,
                               capture_output=True, text=True, timeout=30, check=True)
        made = Orphan(**json.loads(maker.stdout))
        self._orphans.append(made)
        return made


def dead_pid() -> int:
    """A PID no process has (for now): one started and reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    try:
        yield world
    finally:
        world.close()
