"""What the worker knows about a job it started, and the threads that watch it.

``LocalWorker`` keeps one ``Supervised`` per started job. Two kinds of small
daemon threads exist, both only for jobs that run (never for queued runs):
a waiter per job, blocked in ``handle.wait()``, which wakes the daemon loop
the moment the job ends; and a stopper while a job is being cancelled or
timed out, because ``terminate`` blocks for the grace period and the loop
must not. The threads touch nothing but the handle and the callback; every
state change is made by the loop's thread, in ``LocalWorker.step``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from orchestra.runners.base import RunHandle
from orchestra.store import Run
from orchestra.workers.outcomes import label

log = logging.getLogger("orchestra.worker")


@dataclass
class Supervised:
    """A job this worker started for ``run`` (as it stood once the job started)."""

    run: Run
    handle: RunHandle
    started: datetime  # when this attempt started: its timeout counts from here
    grace: float  # seconds between SIGTERM and SIGKILL when stopping it
    log_path: Path
    stop: str | None = None  # why the worker is stopping it (outcomes.CANCEL, TIMEOUT, SHUTDOWN)
    stopper: threading.Thread | None = None

    @property
    def deadline(self) -> datetime | None:
        """When this attempt times out, if it has a timeout."""
        if self.run.timeout_seconds is None:
            return None
        return self.started + timedelta(seconds=self.run.timeout_seconds)


def watch_end(entry: Supervised, on_end: Callable[[], None]) -> threading.Thread:
    """Start the waiter thread: ``on_end()`` as soon as the job has ended."""

    def wait() -> None:
        try:
            entry.handle.wait()
        except Exception:  # a broken handle must still wake the loop, which polls it
            log.exception("%s: waiting for the job failed", label(entry.run))
        on_end()

    thread = threading.Thread(target=wait, name=f"orchestra-wait-{entry.run.id[:12]}", daemon=True)
    thread.start()
    return thread


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
