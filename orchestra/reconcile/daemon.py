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

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from orchestra.diagnostics import SpecError
from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.scheduler import Scheduler, seconds_until
from orchestra.reconcile.watch import Fingerprint, SpecWatcher, fingerprint
from orchestra.specs.validate import ParseCache
from orchestra.store import Store

log = logging.getLogger("orchestra.daemon")
SPEC_STATUS = "spec_status"
ERROR_BACKOFF = 1.0


class Worker(Protocol):
    def recover(self, now: datetime) -> list[str]: ...
    def step(self, now: datetime) -> datetime | None: ...
    def shutdown(self, grace: float, now_fn: Callable[[], datetime]) -> None: ...


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class DaemonSettings:
    paths: list[Path]
    prune: bool = True
    debounce: float = 0.1  # quiet time after the last file event before re-reading
    resync_interval: float = 30.0  # full fingerprint check, for lost events
    poll_interval: float = 0.25  # how often other processes' changes are looked for
    shutdown_grace: float = 30.0
    watch: bool = True


@dataclass
class _SpecState:
    dirty_since: float | None = None
    last_event: float = 0.0
    applied: Fingerprint | None = None
    last_resync: float = 0.0
    last_errors: list[str] = field(default_factory=list)


class Daemon:
    def __init__(self, store: Store, worker: Worker | None, settings: DaemonSettings,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.worker = worker
        self.settings = settings
        self.clock = clock
        self.scheduler = Scheduler(store)
        self.specs = _SpecState()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._marker: Any = None
        self._parse_cache = ParseCache()
        self._deadline: datetime | None = None
        self._forced = True
        self.watcher = SpecWatcher(settings.paths, self.spec_changed) if settings.watch else None

    # -- signals from other threads -------------------------------------------

    def wake(self) -> None:
        """Something happened that the store does not show yet (a job ended): do a full pass."""
        self._forced = True
        self._wake.set()

    def spec_changed(self) -> None:
        now = time.monotonic()
        if self.specs.dirty_since is None:
            self.specs.dirty_since = now
        self.specs.last_event = now
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop ---------------------------------------------------------------

    def start(self) -> None:
        """Start watching, apply the specs, recover what a previous daemon left.

        Watching starts first so that an edit made while the first apply runs
        is not lost until the next resync.
        """
        if self.watcher:
            self.watcher.start()
        self.reload_specs()
        if self.worker:
            recovered = self.worker.recover(self.clock())
            if recovered:
                log.info("recovered %d run(s) left by a previous daemon", len(recovered))

    def serve(self) -> None:
        """Run until ``stop()``; then stop claiming and let running jobs finish or cancel them."""
        self.start()
        try:
            while not self._stop.is_set():
                self._wake.wait(self._guarded_pass())
                self._wake.clear()
        finally:
            if self.watcher:
                self.watcher.stop()
            if self.worker:
                log.info("stopping: no new runs; waiting up to %.0fs for running jobs", self.settings.shutdown_grace)
                self.worker.shutdown(self.settings.shutdown_grace, self.clock)
            log.info("stopped")

    def _guarded_pass(self) -> float:
        """A failing pass (store unreachable, a bug) is logged and retried; it never ends the daemon."""
        try:
            return self.run_once()
        except Exception:
            log.exception("reconcile pass failed; retrying in %.0fs", ERROR_BACKOFF)
            self.scheduler.invalidate()
            return ERROR_BACKOFF

    def run_once(self) -> float:
        """One level-based pass; returns how long the loop may sleep.

        The full pass (scheduler, worker, due runs) only happens when something
        can have changed: the store's change marker moved (this daemon's own
        writes or another process's), a deadline passed, or a job ended (the
        worker wakes us). Otherwise a pass costs one small read.
        """
        self._maybe_reload_specs()
        now = self.clock()
        marker = self.store.change_marker()
        quiet = marker == self._marker and (self._deadline is None or now < self._deadline)
        if quiet and not self._forced:
            return min(seconds_until(self._deadline, now, self.settings.poll_interval), self._spec_wait())
        self._forced = False
        self._marker = marker  # read before the pass: its own writes cause one more, quiet, pass
        waits = [self.scheduler.tick(now)]
        if self.worker:
            waits.append(self.worker.step(now))
        due = self.store.next_due_time()
        if due is not None and due > now:  # a due run held back by a limit must not make the loop spin
            waits.append(due)
        self._deadline = min((w for w in waits if w is not None), default=None)
        return min(seconds_until(self._deadline, self.clock(), self.settings.poll_interval), self._spec_wait())

    def _spec_wait(self) -> float:
        if self.specs.dirty_since is None:
            return self.settings.poll_interval
        return max(0.0, self.specs.last_event + self.settings.debounce - time.monotonic())

    # -- specs --------------------------------------------------------------------

    def _maybe_reload_specs(self) -> None:
        now = time.monotonic()
        state = self.specs
        if state.dirty_since is not None and now - state.last_event >= self.settings.debounce:
            state.dirty_since = None
            self.reload_specs()
        elif now - state.last_resync >= self.settings.resync_interval:
            state.last_resync = now
            if fingerprint(self.settings.paths) != state.applied:
                log.info("spec change found by periodic resync")
                self.reload_specs()

    def reload_specs(self) -> bool:
        """Apply the spec tree if it is valid; otherwise keep the last good state and say why."""
        self.specs.applied = fingerprint(self.settings.paths)
        self.specs.last_resync = time.monotonic()
        try:
            result = plan_specs(self.store, self.settings.paths, prune=self.settings.prune, now=self.clock(),
                                cache=self._parse_cache)
        except SpecError as exc:
            self._record_errors([str(d) for d in exc.diagnostics], [d.to_json() for d in exc.diagnostics])
            return False
        apply_plan(self.store, result)
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
