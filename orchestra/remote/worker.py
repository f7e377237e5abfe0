"""``RemoteWorker``: the loop of ``orchestra worker``, a worker on another machine.

It runs the daemon's ``LocalWorker`` unchanged over a ``RemoteStore``: the
same claim, launch, supervision, timeouts, cancels and retries, with every
store call made through the daemon's API. The loop is the daemon's in
miniature: a pass (``LocalWorker.step``), then sleep until the pass asks to
be called again, a job ends (``wake``), or ``poll_interval`` passes (new
runs are noticed by polling the claim: the API pushes nothing to workers).

Leases: the ``LocalWorker`` renews its leases every lease/3 (the heartbeat).
If the heartbeats stop (the machine dies, the network splits, the process is
stopped), the daemon recovers the runs once the lease runs out: retried if
attempts remain, else Crashed. When this worker comes back, the renewal says
which leases it lost, and it kills those jobs; its late reports are refused.

A pass that fails (the daemon unreachable, a 5xx) is logged and tried again
with a growing delay, up to ``MAX_BACKOFF``; jobs go on meanwhile, and their
logs wait in their files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from orchestra.client import ApiClient, Unauthorized
from orchestra.errors import NotFound
from orchestra.remote.journal import JobJournal
from orchestra.remote.shipper import LogShipper
from orchestra.remote.store_client import RemoteStore
from orchestra.runners.base import Runner
from orchestra.store import ACTIVE, Run, Store
from orchestra.workers.local import LocalWorker

log = logging.getLogger("orchestra.worker")

MAX_BACKOFF = 10.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class RemoteWorker:
    def __init__(self, client: ApiClient, *, worker_id: str, pool: str, runners: Mapping[str, Runner],
                 log_dir: Path, queues: list[str] | None = None, limit: int | None = None,
                 lease_seconds: float = 30.0, poll_interval: float = 1.0, shutdown_grace: float = 30.0,
                 keep_logs: timedelta | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        self.worker_id = worker_id
        self.pool = pool
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.clock = clock
        self.shipper = LogShipper(client, worker_id, log_dir, keep=keep_logs)
        self.store = RemoteStore(client, worker_id, queues=queues, limit=limit,
                                 before_report=self._report_ends, clock=clock)
        self.journal = JobJournal(log_dir)
        self.runners = dict(runners)
        self.store.on_claim = self._claimed
        self.store.on_moved = self._moved
        self.store.on_lost = self.journal.remove
        # LocalWorker is typed for a Store; RemoteStore implements the methods it calls (see store_client).
        self.worker = LocalWorker(cast(Store, self.store), runners=runners, pools=[pool], worker_id=worker_id,
                                  log_dir=log_dir, lease_seconds=lease_seconds, on_change=self.wake)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failures = 0
        self._last_pass: float | None = None  # monotonic time the loop last came round
        self._client = client
        self._said: list[tuple[str, str]] | None = []  # the outages the daemon was last told of; None: it cannot be

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` to end, then are cancelled."""
        self._stop.set()
        self._wake.set()

    def serve(self) -> None:
        """Run passes until ``stop()``; then shut down cleanly (see ``stop``)."""
        self.shipper.start()
        try:
            self._start()
            while not self._stop.is_set():
                wait = self._guarded_pass()
                self._last_pass = time.monotonic()
                if not self._wake.is_set():
                    self.worker.rest()  # the loop sleeps: the runners follow their jobs themselves
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            log.info("stopping: no new runs; waiting up to %.0fs for running jobs", self.shutdown_grace)
            try:
                self.worker.shutdown(self.shutdown_grace, self.clock)
            finally:
                self.shipper.stop()
                self.journal.close()
            log.info("stopped")

    def loop_quiet_for(self) -> float | None:
        """Seconds since the loop last came round (a failed pass counts: the daemon may be
        down, which restarting this worker would not mend); None while it starts or
        stops. Safe from any thread (the health check's)."""
        if self._last_pass is None or self._stop.is_set():
            return None
        return time.monotonic() - self._last_pass

    def _start(self) -> None:
        """Clean up what earlier workers on this machine left: jobs of a worker that died
        (its runs are the daemon's again), containers of finished runs."""
        killed = self.journal.reap_leftovers(self.runners)
        if killed:
            log.warning("killed %d job(s) left running by a worker that died here", killed)
        try:
            self.worker.recover(self.clock())
        except Unauthorized:
            raise
        except Exception as exc:  # the daemon may not be up yet: the passes will retry
            log.warning("cannot reach the daemon yet: %s", exc)

    def _guarded_pass(self) -> float:
        try:
            wait = self.run_once()
        except Unauthorized:
            raise  # a wrong token will not become right by retrying
        except Exception as exc:
            self._failures += 1
            delay = min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 5))
            log.warning("worker pass failed (retrying in %.1fs): %s", delay, exc)
            return delay
        if self._failures:
            log.info("the daemon answers again")
        self._failures = 0
        return wait

    def run_once(self) -> float:
        """One pass; how long the loop may sleep (never past ``poll_interval``)."""
        now = self.clock()
        wanted = self.worker.step(now)
        self._say_outages(now)
        if wanted is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (wanted - self.clock()).total_seconds()))

    def _say_outages(self, now: datetime) -> None:
        """Tell the daemon which pools wait for their runner (``orchestra status`` shows them),
        when that changes: the worker's own status document is written by the daemon's API."""
        unreachable = self.worker.unreachable_pools(now)
        said = [(item["pool"], item["error"]) for item in unreachable]
        if self._said is None or said == self._said:
            return
        try:
            self._client.post(f"/workers/{self.worker_id}/status", {"unreachable": unreachable})
        except NotFound:  # a daemon of an orchestra from before this request: runs wait as well, unshown
            log.info("the daemon's API does not take a worker's status; orchestra status will not show "
                     "which pools wait for their runner here")
            self._said = None
            return
        self._said = said

    def _claimed(self, run: Run) -> None:
        self.shipper.watch(run.id, run.attempt)

    def _moved(self, run: Run) -> None:
        """Journal the jobs of ours that run (see ``journal``); forget the others."""
        if run.state in ACTIVE and run.worker == self.worker_id and run.runner_ident:
            self.journal.add(run.id, run.runner_ident)
        elif run.state not in ACTIVE or run.worker != self.worker_id:
            self.journal.remove([run.id])

    def _report_ends(self, run_ids: Collection[str]) -> None:
        """Before an attempt's end is reported: its output first, then stop watching its log."""
        self.shipper.flush(run_ids)
        self.shipper.release(run_ids)
