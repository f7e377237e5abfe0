"""``orchestra daemon --keep-runs DURATION``: runs over for longer than that are deleted.

Opt-in, like Prefect's flow-run vacuum or ``airflow db clean``: by default
every run is kept. Kubernetes' CronJob history limits and Nomad's job GC
are the other precedent; a duration suits a store shared by many
deployments better than a count per deployment.

What goes, per run: its log (``<id>.log`` and a remote worker's
``<id>.log.streams``), then the run and its events. Logs first: a crash in
between leaves runs without their logs (read as empty, deleted at the next
sweep), never logs nobody can find. Which runs may go is the store's
decision (``store.retention``): never a run that is not over, nor the
latest slot of a schedule, so no slot is ever run twice.

A sweep deletes one batch. A full batch means more are waiting: the next
sweep comes a second later, so a first sweep over a long history stays a
string of short writes between the loop's passes, not one long one. The
daemon sweeps when nothing is due in the next quarter second, so a sweep
does not hold up the first start of a burst; where something is always due
(a pool that never catches up), a sweep waits at most ``MAX_POSTPONE``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from orchestra.durations import format_duration
from orchestra.store import Store

log = logging.getLogger("orchestra.daemon")

BATCH = 200  # runs per sweep: SQLite writes about 0.4 ms a run deleted (random pages of six indexes)
SWEEP_INTERVAL = 600.0  # seconds between sweeps once caught up
CATCH_UP_INTERVAL = 1.0  # seconds between sweeps while a backlog is being deleted
MAX_POSTPONE = 30.0  # seconds a due sweep waits for a quiet moment before it goes anyway
RETRY_AFTER_ERROR = 60.0  # seconds before a sweep that failed is tried again


class RunRetention:
    def __init__(self, store: Store, keep: timedelta, log_dir: Path | None, *, batch: int = BATCH,
                 interval: float = SWEEP_INTERVAL, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.keep = keep
        self.log_dir = log_dir
        self.batch = batch
        self.interval = interval
        self._monotonic = monotonic
        self._next = monotonic()  # the first sweep at the first pass

    def maybe_sweep(self, now: datetime, quiet: bool = True) -> int:
        """Sweep if one is due, and ``quiet`` (nothing about to start) or it waited long enough;
        how many runs went."""
        moment = self._monotonic()
        if moment < self._next or (not quiet and moment < self._next + MAX_POSTPONE):
            return 0
        try:
            deleted, full = self.sweep(now)
        except Exception:  # deleting old runs must never stop new ones: the pass goes on
            log.exception("deleting old runs failed; trying again in %.0fs", RETRY_AFTER_ERROR)
            self._next = self._monotonic() + RETRY_AFTER_ERROR
            return 0
        self._next = self._monotonic() + (CATCH_UP_INTERVAL if full else self.interval)
        return deleted

    def sweep(self, now: datetime) -> tuple[int, bool]:
        """Delete one batch of runs over before ``now - keep``; how many, and whether the batch was full."""
        ids = self.store.forgettable_runs(now - self.keep, self.batch)
        for run_id in ids:
            self._remove_log(run_id)
        deleted = self.store.forget_runs(ids)
        if deleted:
            log.info("deleted %d run(s) over for more than %s, with their events and logs (--keep-runs)",
                     deleted, format_duration(self.keep))
        return deleted, len(ids) >= self.batch

    def _remove_log(self, run_id: str) -> None:
        if self.log_dir is None:
            return
        for name in (f"{run_id}.log", f"{run_id}.log.streams"):
            with contextlib.suppress(FileNotFoundError):
                (self.log_dir / name).unlink()
