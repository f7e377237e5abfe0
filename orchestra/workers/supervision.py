"""What the worker knows about a job it started, and the threads that watch it.

``LocalWorker`` keeps one ``Supervised`` per started job. The daemon loop is
woken the moment a job ends: by the runner itself when its handle can call
back (``NotifyingHandle``: the process runner's one pump thread notices
every exit anyway), else by a waiter thread blocked in ``handle.wait()``
(reused from job to job, see ``WaiterPool``). A stopper thread exists while
a job is being cancelled or timed out, because ``terminate`` blocks for the
grace period and the loop must not. The callbacks and threads touch nothing
but the handle and the callback; every state change is made by the loop's
thread, in ``LocalWorker.step``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from orchestra.runners.base import NotifyingHandle, RunHandle
from orchestra.store import Run
from orchestra.workers.outcomes import label

log = logging.getLogger("orchestra.worker")


@dataclass
class Supervised:
    """A job this worker started for ``run``: the run as last seen (once the job
    started, or once a cancel was noticed), which is what its end is compared with."""

    run: Run
    handle: RunHandle
    started: datetime  # when this attempt started: its timeout counts from here
    grace: float  # seconds between SIGTERM and SIGKILL when stopping it
    log_path: Path
    stop: str | None = None  # why the worker is stopping it (outcomes.CANCEL, TIMEOUT, SHUTDOWN)
    stopper: threading.Thread | None = None
    end_watched: bool = False  # ``watch_end`` was called: once is enough

    @property
    def deadline(self) -> datetime | None:
        """When this attempt times out, if it has a timeout."""
        if self.run.timeout_seconds is None:
            return None
        return self.started + timedelta(seconds=self.run.timeout_seconds)


class WaiterPool:
    """Daemon threads that block in ``handle.wait()``, reused from job to job.

    A thread per job, started and ended with the job, cost a thread start for
    every run: in a burst of short jobs the loop spent more time starting
    waiters than recording runs. Here a thread that saw its job end waits
    for the next one, so a new thread starts only while every existing one
    is busy, and one left idle for ``IDLE_EXIT`` seconds ends.
    """

    IDLE_EXIT = 60.0

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads between two tasks, not yet promised to one

    @property
    def idle(self) -> int:
        """Threads waiting for a job (for tests)."""
        return self._idle

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
                return
        threading.Thread(target=self._serve, name="orchestra-wait", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no task was promised to this thread: end it
                        self._idle -= 1
                        return
                continue  # a task is promised to us and on its way
            task()
            with self._lock:
                self._idle += 1


_waiters = WaiterPool()  # shared by every worker of the process


def watch_end(entry: Supervised, on_end: Callable[[], None]) -> None:
    """Have ``on_end()`` called as soon as the job has ended: by the runner if its
    handle can call back, else by a waiter thread.

    In a burst of short jobs a waiter per job meant a thread wake-up per end,
    each competing with the loop for the interpreter; a callback costs none.
    Once per job: a later call does nothing.
    """
    if entry.end_watched:
        return
    entry.end_watched = True
    if hasattr(entry.handle, "add_done_callback"):
        cast(NotifyingHandle, entry.handle).add_done_callback(_guarded(entry, on_end))
        return

    def wait() -> None:
        try:
            entry.handle.wait()
        except Exception:  # a broken handle must still wake the loop, which polls it
            log.exception("%s: waiting for the job failed", label(entry.run))
        try:
            on_end()
        except Exception:  # the waiter thread serves other jobs next
            log.exception("%s: end callback failed", label(entry.run))

    _waiters.submit(wait)


def _guarded(entry: Supervised, on_end: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        try:
            on_end()
        except Exception:  # the runner's thread serves other jobs next
            log.exception("%s: end callback failed", label(entry.run))

    return call


def request_stop(entry: Supervised, why: str) -> None:
    """Stop the job in a stopper thread (SIGTERM, ``grace``, SIGKILL), once.

    The loop records the outcome when the job has ended; ``entry.stop`` tells
    it why the job was stopped.
    """
    if entry.stop is not None:
        return
    entry.stop = why

    def terminate() -> None:
        try:
            entry.handle.terminate(entry.grace)
        except Exception:
            log.exception("%s: stopping the job failed; killing it", label(entry.run))
            entry.handle.kill()

    entry.stopper = threading.Thread(target=terminate, name=f"orchestra-stop-{entry.run.id[:12]}", daemon=True)
    entry.stopper.start()
