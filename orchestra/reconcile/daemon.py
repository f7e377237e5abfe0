"""The reconcile daemon: specs in, runs out, until told to stop.

``orchestra daemon`` builds one ``Daemon`` and calls ``serve()``. Each pass
of the loop is level-based: re-apply the specs if the tree changed, let the
scheduler materialize due slots, let the worker finish, cancel, time out
and start runs; then sleep until the earliest thing that needs doing (the
next slot, a retry falling due, a job's timeout) or until woken (a spec
file changed, a job ended). Changes other processes make (``orchestra run``,
``cancel``, ``pause``) are noticed through one cheap query of the store's
change marker every ``poll_interval``; nothing polls busily.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import select
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from orchestra.diagnostics import SpecError
from orchestra.errors import StoreError
from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.presence import Presence
from orchestra.reconcile.retention import RunRetention
from orchestra.reconcile.scheduler import PREPARE_AHEAD, Scheduler, seconds_until
from orchestra.reconcile.watch import Fingerprint, SpecWatcher, fingerprint
from orchestra.specs.validate import ParseCache
from orchestra.store import Store
from orchestra.workers.recovery import recover_runs

log = logging.getLogger("orchestra.daemon")
SPEC_STATUS = "spec_status"
ERROR_BACKOFF = 1.0
LEASE_CHECK = 1.0  # seconds between looks for expired leases when no in-process worker does it
MARKER_REUSE = 0.1  # seconds a pass woken by a job's end may reuse the last change marker read
RETENTION_QUIET = timedelta(seconds=0.25)  # old runs are deleted when nothing is due sooner (see retention)


class Worker(Protocol):
    def recover(self, now: datetime) -> list[str]: ...
    def step(self, now: datetime) -> datetime | None: ...
    def shutdown(self, grace: float, now_fn: Callable[[], datetime]) -> None: ...
    def rest(self) -> None: ...  # the loop is about to sleep (see ``LocalWorker.rest``)
    def unreachable_pools(self, now: datetime) -> list[dict[str, str]]: ...  # for ``orchestra status``


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, the API, the specs) out of the collector's
    full passes from now on: with it in, a pass of the oldest generation took 45 ms
    of the loop, and one that fell in a burst of 200 runs stretched its drain by a
    quarter. What is garbage now is collected first; later garbage as usual. Only in
    a process that is the daemon's own: a process that starts daemons again and
    again (tests) would pay a full collection each time and keep what it froze."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class DaemonSettings:
    paths: list[Path]
    prune: bool = True
    debounce: float = 0.1  # quiet time after the last file event before re-reading
    resync_interval: float = 30.0  # full fingerprint check, for lost events
    poll_interval: float = 0.25  # how often other processes' changes are looked for
    shutdown_grace: float = 30.0
    watch: bool = True
    prepare_ahead: float = PREPARE_AHEAD.total_seconds()  # runs made this long before their slot
    keep_runs: timedelta | None = None  # delete runs over for longer (None: keep every run)
    log_dir: Path | None = None  # where the runs' logs are, to delete those of deleted runs
    workers: str = "all"  # the pools its worker runs, as ``--workers`` said (for ``orchestra status``)
    freeze_after_start: bool = False  # the process is the daemon's own (the CLI's): see ``_freeze_startup_objects``


@dataclass
class _SpecState:
    dirty_since: float | None = None
    last_event: float = 0.0
    applied: Fingerprint | None = None
    last_resync: float = 0.0
    last_errors: list[str] = field(default_factory=list)


UNWATCHED_RESYNC = 1.0  # seconds between looks for spec changes where the tree cannot be watched


class Wakeup:
    """What the loop sleeps on between passes; ``set`` wakes it, from any thread
    or from a signal handler.

    Not a ``threading.Event``: its ``set`` takes a lock that ``wait`` holds for
    a moment, and a signal handler runs in the main thread, inside whatever
    the loop was doing, so a SIGTERM landing in that moment hung the daemon
    for good. A pipe takes no lock: ``set`` writes a byte (only when none is
    pending, so a burst of job ends costs one write), ``wait`` selects on it.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._poll = select.poll()  # not select(): it fails for descriptor numbers past 1023
        self._poll.register(self._read_fd, select.POLLIN)
        self._pending = False
        # closed with the object, not when the loop ends: a late ``set`` must never
        # write into a descriptor number that something else has reused
        weakref.finalize(self, _close_fds, self._read_fd, self._write_fd)

    def set(self) -> None:
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._write_fd, b"\0")

    @property
    def pending(self) -> bool:
        """Was it set since the last ``wait``? (Then ``wait`` returns at once.)"""
        return self._pending

    def wait(self, timeout: float) -> None:
        """Sleep until ``set`` or ``timeout`` seconds, then forget the wake-ups so far."""
        if not self._pending:
            self._poll.poll(math.ceil(max(0.0, timeout) * 1000))
        self._pending = False  # before draining: a ``set`` from now on writes again
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class Daemon:
    def __init__(self, store: Store, worker: Worker | None, settings: DaemonSettings,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.worker = worker
        self.settings = settings
        self.clock = clock
        self.scheduler = Scheduler(store)
        self.specs = _SpecState()
        self._resync_interval = settings.resync_interval  # shorter when the tree cannot be watched
        self._wake = Wakeup()
        self._stopping = False
        self._marker: Any = None
        self._marker_read = -math.inf  # monotonic time of the last change marker read
        self._parse_cache = ParseCache()
        self._deadline: datetime | None = None
        self._forced = True
        self._ticked: tuple[Any, datetime | None] | None = None  # resource revision and next slot at the last tick
        self._next_lease_check = 0.0
        self._next_follow = 0.0  # monotonic time of the next look at where the spec paths lead
        self._last_pass: float | None = None  # monotonic time the loop last came round; None until it has
        self._schedules_news: dict[str, Any] = {}  # what the status document says of the scheduler's lead
        self.presence = Presence(store, clock, {
            "paths": [str(path) for path in settings.paths],
            "workers": settings.workers if worker is not None else "none",
        }, lambda: {"unreachable": worker.unreachable_pools(self.clock()) if worker is not None else [],
                    **self._schedules_news})
        self.watcher = SpecWatcher(settings.paths, self.spec_changed) if settings.watch else None
        self.retention = (RunRetention(store, settings.keep_runs, settings.log_dir)
                          if settings.keep_runs is not None else None)

    # -- signals from other threads -------------------------------------------

    def wake(self) -> None:
        """Something happened that the store does not show yet (a job ended): do a full pass."""
        self._forced = True
        self._wake.set()

    def spec_changed(self) -> None:
        """The tree may have changed (a watch event, SIGHUP): read it after the debounce.
        Safe in a signal handler: sets attributes and writes a byte, takes no lock."""
        now = time.monotonic()
        if self.specs.dirty_since is None:
            self.specs.dirty_since = now
        self.specs.last_event = now
        self._wake.set()

    def stop(self) -> None:
        """Safe in a signal handler: sets a flag and writes a byte, takes no lock."""
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- the loop ---------------------------------------------------------------

    def start(self) -> None:
        """Start watching, apply the specs, recover what a previous daemon left.

        Watching starts first so that an edit made while the first apply runs
        is not lost until the next resync.
        """
        self.store.checkpoint_in_background()  # the loop's writes never pay for a checkpoint
        self.store.keep_writer()  # nor for a connection taken from the pool and handed back
        if self.watcher:
            self._start_watching()
        self.reload_specs()
        if self.worker:
            recovered = self.worker.recover(self.clock())
            if recovered:
                log.info("recovered %d run(s) left by a previous daemon", len(recovered))
        with contextlib.suppress(StoreError):  # the loop's passes write it again
            self.scheduler.ask_lead()  # so that the first status document says who schedules
            self._note_lead()
            self.presence.beat()
            self.presence.tidy()

    def _start_watching(self) -> None:
        """Watch the spec tree; where the system refuses (inotify's limits on watches or
        instances, a file system without events), look for changes every
        ``UNWATCHED_RESYNC`` seconds instead: an edit still lands within about a second."""
        assert self.watcher is not None
        try:
            self.watcher.start()
        except OSError as err:
            self.watcher = None
            self._resync_interval = min(self._resync_interval, UNWATCHED_RESYNC)
            log.warning("cannot watch %s for changes (%s); looking for changes every %.0fs instead "
                        "(on Linux, raise fs.inotify.max_user_watches or max_user_instances)",
                        ", ".join(map(str, self.settings.paths)), err, self._resync_interval)

    def serve(self) -> None:
        """Run until ``stop()``; then stop claiming and let running jobs finish or cancel them."""
        self.start()
        if self.settings.freeze_after_start:
            _freeze_startup_objects()
        log.info("daemon ready: specs checked, runs recovered")  # tests and operators wait for this line
        try:
            while not self._stopping:
                wait = self._guarded_pass()
                self._came_round()
                self._sleep(wait)
        finally:
            if self.watcher:
                self.watcher.stop()
            self.scheduler.close()  # first: another daemon takes over the schedules while jobs finish here
            if self.worker:
                log.info("stopping: no new runs; waiting up to %.0fs for running jobs", self.settings.shutdown_grace)
                self.worker.shutdown(self.settings.shutdown_grace, self.clock)
            with contextlib.suppress(StoreError):  # a store that is gone: the document goes quiet instead
                self.presence.stopped()
            log.info("stopped")

    def _came_round(self) -> None:
        """A pass ended, failed or not: the loop is alive, which the health check and
        the presence document say (a failing store is the health check's own concern)."""
        self._last_pass = time.monotonic()
        with contextlib.suppress(StoreError):  # the pass has said so already
            self.presence.beat()

    def loop_quiet_for(self) -> float | None:
        """Seconds since the loop last came round; None while it starts (applying the
        specs and recovering runs may take long) and once it stops (a shutdown waits
        for running jobs, up to ``shutdown_grace``). Safe from any thread."""
        if self._last_pass is None or self._stopping:
            return None
        return time.monotonic() - self._last_pass

    def _sleep(self, seconds: float) -> None:
        """Wait for the next pass; the worker is told when the loop really sleeps, not
        when a job's end or a change already asks for the next pass (a burst)."""
        if self.worker is not None and seconds > 0 and not self._wake.pending:
            self.worker.rest()
        self._wake.wait(seconds)

    def _guarded_pass(self) -> float:
        """A failing pass (store unreachable, a bug) is logged and retried; it never ends the daemon."""
        try:
            return self.run_once()
        except StoreError as exc:  # the store's own words say it all (disk full, locked, unreachable)
            log.error("reconcile pass failed: %s; retrying in %.0fs", exc, ERROR_BACKOFF)
        except Exception:
            log.exception("reconcile pass failed; retrying in %.0fs", ERROR_BACKOFF)
        self.scheduler.invalidate()
        self._ticked = None
        return ERROR_BACKOFF

    def run_once(self) -> float:
        """One level-based pass; returns how long the loop may sleep.

        The full pass (scheduler, worker, due runs) only happens when something
        can have changed: the store's change marker moved (this daemon's own
        writes or another process's), a deadline passed, or a job ended (the
        worker wakes us). Otherwise a pass costs one small read.
        """
        reloaded = self._maybe_reload_specs()
        now = self.clock()
        if self.worker is None:
            self._recover_expired_leases(now)
        if self.retention is not None:
            self.retention.maybe_sweep(now, quiet=self._nothing_due_within(now, RETENTION_QUIET))
        marker = self._current_marker(reloaded)
        quiet = marker == self._marker and (self._deadline is None or now < self._deadline)
        if quiet and not self._forced:
            return min(seconds_until(self._deadline, now, self.settings.poll_interval), self._spec_wait())
        self._forced = False
        self._marker = marker  # read before the pass: its own writes cause one more, quiet, pass
        waits = [self._tick(now, marker[0])]
        if self.worker:
            waits.append(self.worker.step(now))  # which includes when its pools' runs fall due
        else:
            due = self.store.next_due_time()
            if due is not None and due > now:  # a due run held back by a limit must not make the loop spin
                waits.append(due)
        self._deadline = min((w for w in waits if w is not None), default=None)
        return min(seconds_until(self._deadline, self.clock(), self.settings.poll_interval), self._spec_wait())

    def _nothing_due_within(self, now: datetime, span: timedelta) -> bool:
        """No slot, due run or timeout is known to come within ``span`` (as of the last pass)."""
        return self._deadline is None or self._deadline - now > span

    def _current_marker(self, reloaded: bool) -> Any:
        """The store's change marker; in a burst, the last one read if it is recent.

        A job's end forces a full pass anyway (``wake``), so there the marker
        only tells the scheduler whether resources changed: reading it once
        per ``MARKER_REUSE`` instead of once per wave of job ends is a
        statement less per pass. Reusing the older marker is safe: whatever
        changed since is seen by the next pass that reads it (a quiet pass
        always reads), at most ``poll_interval`` later; a cancel is found
        by the worker's own pass either way. After a spec reload it is
        always read, so new schedules tick at once.
        """
        now = time.monotonic()
        if (self._forced and not reloaded and self._marker is not None
                and now - self._marker_read < MARKER_REUSE):
            return self._marker
        self._marker_read = now
        return self.store.change_marker()

    def _tick(self, now: datetime, revision: Any) -> datetime | None:
        """Let the scheduler materialize due slots; when the next one is due.

        Skipped while no slot is due and no resource changed since the last
        tick (schedules live in resources; pausing one bumps the revision
        too): in a burst, the loop passes for every wave of job ends, and
        the scheduler has nothing to do in any of them.
        """
        if self._ticked is not None:
            ticked_revision, next_slot = self._ticked
            if ticked_revision == revision and (next_slot is None or now < next_slot):
                return next_slot
        next_slot = self.scheduler.tick(now, timedelta(seconds=self.settings.prepare_ahead))
        self._ticked = (revision, next_slot)
        self._note_lead()
        return next_slot

    def _note_lead(self) -> None:
        """Status shows at once which daemon schedules, and since when (of two documents that
        say so, the older is a leader killed before it could say otherwise)."""
        said = {True: "materializes", False: "stands by"}.get(self.scheduler.leading)
        if said != self._schedules_news.get("schedules"):
            self._schedules_news = {"schedules": said, "schedulesSince": self.clock().isoformat()}
            self.presence.news()

    def _recover_expired_leases(self, now: datetime) -> None:
        """Without an in-process worker (``--workers none``), recovering runs whose worker
        stopped renewing its lease is the loop's job: every ``LEASE_CHECK`` seconds, the
        expired runs are retried or marked Crashed. Their jobs run on other machines: nothing
        is killed here (the worker kills them itself when it finds its lease gone)."""
        if time.monotonic() < self._next_lease_check:
            return
        self._next_lease_check = time.monotonic() + LEASE_CHECK
        recovered = recover_runs(self.store, {}, self.store.expired_leases(now), now)
        if recovered:
            log.info("recovered %d run(s) whose worker's lease expired", len(recovered))

    def _spec_wait(self) -> float:
        if self.specs.dirty_since is None:
            return self.settings.poll_interval
        return max(0.0, self.specs.last_event + self.settings.debounce - time.monotonic())

    # -- specs --------------------------------------------------------------------

    def _maybe_reload_specs(self) -> bool:
        """Re-apply the specs if they changed; whether they were re-read."""
        now = time.monotonic()
        state = self.specs
        self._follow_spec_paths(now)
        if state.dirty_since is not None and now - state.last_event >= self.settings.debounce:
            state.dirty_since = None
            self.reload_specs()
            return True
        if now - state.last_resync >= self._current_resync_interval():
            state.last_resync = now
            if fingerprint(self.settings.paths) != state.applied:
                log.info("spec change found by periodic resync")
                self.reload_specs()
                return True
        return False

    def _follow_spec_paths(self, now: float) -> None:
        """Every ``poll_interval``: a spec path that leads to another directory now (a
        symlink swapped to a new checkout, a directory removed and made again) is
        watched there, and the tree read again, since the old watch saw nothing."""
        if self.watcher is None or now < self._next_follow:
            return
        self._next_follow = now + self.settings.poll_interval
        was_complete = self.watcher.complete
        try:
            moved = self.watcher.follow()
        except OSError as err:  # tried again at the next look; meanwhile the resync looks every second
            (log.warning if was_complete else log.debug)(
                "cannot watch a spec path where it leads now (%s); looking for changes every %.0fs "
                "until it can be", err, UNWATCHED_RESYNC)
            moved = was_complete  # read the specs once, not at every failed look
        if moved:
            log.info("a spec path leads somewhere else now (a swapped symlink, a directory made anew, or "
                     "nothing): watching it there and reading the specs again")
            self.spec_changed()

    def _current_resync_interval(self) -> float:
        """Where a spec path is not watched for now (missing, or refused), edits are
        looked for every ``UNWATCHED_RESYNC`` seconds, as for a tree never watched."""
        if self.watcher is not None and not self.watcher.complete:
            return min(self._resync_interval, UNWATCHED_RESYNC)
        return self._resync_interval

    def reload_specs(self) -> bool:
        """Apply the spec tree if it is valid; otherwise keep the last good state and say why.

        A tree the store could not take (locked, full, unreachable) is still to be applied:
        the next pass tries again, where the periodic resync would have taken it for applied.
        """
        seen = fingerprint(self.settings.paths)
        self.specs.last_resync = time.monotonic()
        try:
            result = plan_specs(self.store, self.settings.paths, prune=self.settings.prune, now=self.clock(),
                                cache=self._parse_cache)
            apply_plan(self.store, result)
        except SpecError as exc:
            self.specs.applied = seen  # read again only once it changes
            self._record_errors([str(d) for d in exc.diagnostics], [d.to_json() for d in exc.diagnostics])
            return False
        except BaseException:
            if self.specs.dirty_since is None:  # still to apply: the next pass tries again
                self.specs.dirty_since = time.monotonic()
            raise
        self.specs.applied = seen
        if result.plan.has_changes:
            s = result.plan.summary
            log.info("applied specs: %d created, %d updated, %d deleted", s["create"], s["update"], s["delete"])
        self._record_ok(len(result.specs.resources))
        return True

    def _record_errors(self, lines: list[str], diagnostics: list[dict[str, Any]]) -> None:
        if lines != self.specs.last_errors:
            for line in lines:
                log.error("invalid spec, keeping the last good state: %s", line)
        self.specs.last_errors = lines
        self.store.put_status(SPEC_STATUS, {"ok": False, "checkedAt": self.clock().isoformat(),
                                            "errors": diagnostics})

    def _record_ok(self, count: int) -> None:
        if self.specs.last_errors:
            log.info("specs valid again")
        self.specs.last_errors = []
        self.store.put_status(SPEC_STATUS, {"ok": True, "checkedAt": self.clock().isoformat(),
                                            "resources": count, "errors": []})
