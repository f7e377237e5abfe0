"""The daemon's in-process worker: claims runs of its pools, launches them, supervises them.

``orchestra daemon`` builds one ``LocalWorker`` (``cli/daemon_cmd.py``) and its
loop (``reconcile/daemon.py``) calls ``recover`` once, ``step(now)`` on every
pass and ``shutdown`` at the end. A step never waits for a job: it polls the
handles of the jobs it runs, reads the store, and leaves every wait to the
runner's end callbacks or small threads (``supervision``), which wake the
loop through ``on_change`` when a job ends.
Time is injected (``now``), so tests drive the worker pass by pass.

A step, in order: record jobs that started or ended since the last pass
(with retries), stop jobs whose run is being cancelled, stop jobs past their
timeout, renew leases (and drop jobs whose lease another daemon revoked),
recover orphans of dead workers, claim and start due runs. A start is not
recorded by the pass that made it: its outcome is handed over (by the loop's
own thread, or a start thread for runners that want one), which wakes the
loop, and the next pass records it with whatever else happened. In a burst
the first step and the last go together: the starts and ends since the last
pass are recorded and one pool claimed in one store write, and its runs'
jobs are launched at once, before the rest of the pass (``_finish_and_claim``).
Starting is in ``launching``, what a pass records in ``recording``,
recovering in ``recovery``, the decisions in ``outcomes``; this module
sequences them and holds the in-memory state: the jobs it started, by run
id, and the runs whose jobs are starting.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from orchestra.errors import NotFound, StoreError
from orchestra.runners.base import Runner
from orchestra.store import ACTIVE, CANCELLED, CANCELLING, PENDING, RUNNING, FinishedAndClaimed, Run, Store, evolve
from orchestra.workers.capacity import Capacity
from orchestra.workers.identity import worker_identity
from orchestra.workers.launching import Launcher, NotStarted, Outcome, Started, StartError
from orchestra.workers.outages import Outages
from orchestra.workers.outcomes import (
    CANCEL,
    CANCELLED_BY_REQUEST,
    SHUTDOWN,
    SHUTTING_DOWN,
    TIMEOUT,
    finish_outcome,
    label,
    seconds_text,
)
from orchestra.workers.adoption import adopt_orphans
from orchestra.workers.recording import Ended, PassRecord
from orchestra.workers.recovery import recover_runs
from orchestra.workers.rendering import render_as_claimed
from orchestra.workers.reporting import (
    Move,
    apply_moves,
    finish,
    finish_request,
    move_request,
    note,
    report_moves,
)
from orchestra.workers.resource_cache import ResourceCache
from orchestra.workers.supervision import Supervised, request_stop, watch_end

__all__ = ["LocalWorker", "worker_identity"]

log = logging.getLogger("orchestra.worker")

CLAIM_BATCH = 50  # runs claimed per pool per step; a full batch asks for another step at once
CANCEL_POLL = 1.0  # seconds: how soon a cancel made by another process is noticed while jobs run
BLOCKED_POLL = 1.0  # seconds: recheck due runs held back by a limit someone else may free
STOP_JOIN_MARGIN = 5.0  # seconds a stopper may take beyond its grace (SIGKILL, output drain)
RECORD_START_WITHIN = 0.05  # seconds: a job still running is recorded Running at most this long after its start
GATHER_STARTS = 0.005  # seconds a pass may wait for starts in flight, to record them all in one write
REHEARSE_AHEAD = timedelta(seconds=4)  # how soon before runs fall due their claim is rehearsed (as soon as they exist)
PREPARE_MARGIN = 0.02  # seconds before the due time at which preparing its runs stops


class LocalWorker:
    """In-process worker: claims runs of its pools, launches them through a Runner, supervises them."""

    def __init__(self, store: Store, *, runners: Mapping[str, Runner], pools: Collection[str] | None = None,
                 worker_id: str, log_dir: Path, python: str = sys.executable, lease_seconds: float = 30.0,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.runners = dict(runners)
        # runners whose own thread follows running jobs, which this thread does itself while busy
        self._attended = [runner for runner in self.runners.values()
                          if hasattr(runner, "attend") and hasattr(runner, "rest")]
        self._attending: int | None = None  # the thread attending the runners right now
        self.pools = None if pools is None else frozenset(pools)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.on_change = on_change  # public: the daemon sets it once it exists
        self._launcher = Launcher(store, worker_id, Path(log_dir), python)
        self._resources = ResourceCache(store)
        self._jobs: dict[str, Supervised] = {}
        self._launching: dict[str, Run] = {}  # claimed runs whose start outcome is not yet recorded
        self._outcomes: list[Outcome] = []  # handed over by the start threads, taken by the next pass
        self._outcomes_lock = threading.Lock()
        self._put_off_since: dict[str, float] = {}  # run id -> when its start's record was first put off
        self._next_renewal: datetime | None = None
        self._next_orphan_check: datetime | None = None
        self._ended = threading.Event()
        self._closing = False
        self._store_away: Exception | None = None  # while stopping: why the last write failed, if it did
        self._warned: set[str] = set()
        self._backlog: set[str] = set()  # pools that had due runs left after their last claim
        self._adopted = False  # the last pass's claim read the resource marker: no refresh needed
        self._rehearsed: dict[str, datetime] = {}  # pool -> the due time its claim was rehearsed for
        self._capacity = Capacity()  # bounded for a while after a start ran short of resources
        self._outages = Outages(wake=self._wake_loop)  # pools whose runner could not be reached
        self.preparing: threading.Thread | None = None  # the last rehearsal's ``Launcher.prepare`` (tests join it)

    def log_path(self, run_id: str) -> Path:
        return self._launcher.log_path(run_id)

    @property
    def starting(self) -> int:
        """Runs claimed whose start is not recorded yet: the next pass records them."""
        return len(self._launching)

    # -- the daemon's calls ---------------------------------------------------------

    def recover(self, now: datetime) -> list[str]:
        """Move on the runs dead workers left active (see ``recovery``); their ids."""
        runs = [run for run in self.store.active_runs() if not self._holds(run.id)]
        adopted, left = self._adopt(runs, now)
        recovered = adopted + recover_runs(self.store, self.runners, left, now)
        self._clean_up_terminal()
        return recovered

    def _clean_up_terminal(self) -> None:
        """Remove what runners kept of runs that are over (containers of a crashed daemon's
        runs that were since recovered, cancelled or finished elsewhere)."""
        for kind, runner in self.runners.items():
            clean_up = getattr(runner, "cleanup_terminal", None)
            if clean_up is None:
                continue
            try:
                touched = clean_up(self._run_is_over)
            except Exception as exc:  # an engine that cannot be asked now: try at the next start
                # Loud only where it matters: with no pool of this type, an engine that is
                # not running (no Docker on a process-only host) is the normal case.
                level = logging.WARNING if self._type_in_use(kind) else logging.DEBUG
                log.log(level, "cannot clean up the jobs of finished %s runs: %s", kind, exc)
                continue
            if touched:
                log.info("removed %d leftover job(s) of finished runs", len(touched))

    def _type_in_use(self, kind: str) -> bool:
        return any(pool.spec.get("type") == kind for pool in self._resources.pools())

    def _run_is_over(self, run_id: str) -> bool:
        try:
            return self.store.get_run(run_id).terminal
        except NotFound:  # another installation's job: not ours to remove
            return False

    def _adopt(self, runs: list[Run], now: datetime) -> tuple[list[str], list[Run]]:
        """Follow again the jobs that outlived their worker (containers); the ids adopted and
        the runs left for crash recovery."""
        adopted, left = adopt_orphans(self.store, self.runners, runs, now, worker=self.worker_id,
                                      lease_seconds=self.lease_seconds, log_path=self.log_path,
                                      render=lambda run: render_as_claimed(self.store, run, self._launcher.python))
        for entry in adopted:
            self._supervise_job(entry, now)
        return [entry.run.id for entry in adopted], left

    def step(self, now: datetime) -> datetime | None:
        """One pass (see the module docstring); when the next pass is needed, None if never.

        When jobs started or ended, or a pool has runs left due, all of it is
        recorded and that pool claimed in one store write (``_finish_and_claim``):
        in a burst that is every pass, and one write instead of three writes
        and three reads is most of what a wave of runs costs the loop.
        """
        self._gather_starts()
        self._launcher.held.drop_expired()
        record = self._pass_record(now)
        # The last pass's claim read the resource marker, and this one's will: no refresh needed.
        fresh = self._adopted and bool(record.moves or self._backlog)
        try:
            if not fresh:
                self._resources.refresh()
            served = [] if self._closing else self._served_pools()
        except BaseException as error:
            self._unrecorded(record, error)
            raise
        self._adopted = False
        waits: list[datetime] = []
        fused = self._finish_and_claim(record, served, now)
        if fused is None:
            if fresh:  # no claim read the marker after all
                self._resources.refresh()
                served = [] if self._closing else self._served_pools()
            self._write(record, now)
        else:  # launched at once: a claimed run waits for nothing else of the pass
            pool, done = fused
            waits += self._claim_and_start(pool, dict(served)[pool], now, done)
        self._handle_cancels(now, fused[1].cancelling if fused else None)
        self._enforce_timeouts(now)
        self._renew_leases(now)
        if not self._closing:
            self._recover_expired(now)
            for pool, runner in served:
                if fused is None or pool != fused[0]:
                    waits += self._claim_and_start(pool, runner, now)
        waits += self._supervision_wakeups(now)
        waits += self._put_off_wakeup(now)
        return min(waits, default=None)

    def shutdown(self, grace: float, now_fn: Callable[[], datetime]) -> None:
        """Stop claiming; give running jobs ``grace`` seconds to end, then cancel the rest.

        The jobs stop whatever the store does. A pass that cannot be recorded (the
        store locked past its busy timeout, a remote worker's daemon away) is tried
        again while the grace lasts, and the jobs are cancelled at its end all the
        same; each end that could not be recorded is said, and its run is left to
        the recovery of lost workers (taken back once its lease runs out).
        """
        self._closing = True
        deadline = time.monotonic() + grace
        while self._busy() and (left := deadline - time.monotonic()) > 0:
            self._ended.clear()  # before polling: an end after the poll sets it again
            self._while_stopping(lambda: self._supervise(now_fn()))
            if self._busy():
                self.rest()
                self._ended.wait(min(left, CANCEL_POLL))
        self._await_starts(now_fn, STOP_JOIN_MARGIN)
        if self.preparing is not None:  # it stops by the due time it prepares for, at most REHEARSE_AHEAD away
            self.preparing.join(REHEARSE_AHEAD.total_seconds() + STOP_JOIN_MARGIN)
        self._launcher.held.drop_all()
        self._supervise_unrecorded_starts(now_fn())
        if self._jobs:
            self._cancel_all(now_fn)
        self._say_unrecorded_ends()

    def _while_stopping(self, step: Callable[[], object]) -> None:
        """A shutdown step that writes to the store. One the store cannot take now does not
        end the shutdown: what it was to record stays to be recorded by the next step. Nor
        does any other failure (a refused token, a bug): the jobs must stop regardless."""
        try:
            step()
        except Exception as error:
            if self._store_away is None and isinstance(error, StoreError):
                log.warning("cannot record while stopping (%s); the jobs are stopped all the same", error)
            elif self._store_away is None:
                log.exception("recording failed while stopping; the jobs are stopped all the same")
            self._store_away = error
        else:
            self._store_away = None

    def _supervise_unrecorded_starts(self, now: datetime) -> None:
        """Jobs started but never recorded (the store away): the shutdown's to stop, as the
        recorded ones. A start still under way after ``_await_starts`` is left to recovery."""
        with self._outcomes_lock:
            taken, self._outcomes = self._outcomes, []
        for outcome in taken:
            if isinstance(outcome, Started):
                self._launching.pop(outcome.run.id, None)
                self._supervise_job(outcome.entry, now)

    def _say_unrecorded_ends(self) -> None:
        for entry in self._jobs.values():
            if entry.handle.poll() is not None:
                log.warning("%s: cannot report that its job ended (%s); the daemon takes the run back "
                            "when its lease runs out", label(entry.run), self._store_away or "not recorded")
            else:
                log.warning("%s: job did not end after SIGKILL; left for recovery", label(entry.run))

    def rest(self) -> None:
        """This thread is about to sleep or block: the runners follow their jobs on their own
        threads again (see ``_poll_ended``). The daemon's loop calls it before it sleeps."""
        for runner in self._attended:
            runner.rest()  # type: ignore[attr-defined]

    def _busy(self) -> bool:
        return bool(self._jobs or self._launching)

    def _holds(self, run_id: str) -> bool:
        """Is a job of this run ours: running, or starting?"""
        return run_id in self._jobs or run_id in self._launching

    def _await_starts(self, now_fn: Callable[[], datetime], timeout: float) -> None:
        """Record the starts still in flight (a start outlasting the grace), for at most ``timeout``
        seconds: a job is cancelled only once it is supervised. With the store away, only
        until every start is handed over (``_supervise_unrecorded_starts`` takes them)."""
        deadline = time.monotonic() + timeout
        while self._launching and (left := deadline - time.monotonic()) > 0:
            self._ended.clear()
            if self._store_away is None:
                self._while_stopping(lambda: self._write(self._pass_record(now_fn(), poll_ends=False), now_fn()))
            elif not self._runs_starting():
                break
            if self._launching:
                self.rest()
                self._ended.wait(min(left, CANCEL_POLL))
        for run_id in self._runs_starting():
            log.warning("run %s: its job was still starting at shutdown; left for recovery", run_id[:12])

    def _runs_starting(self) -> list[str]:
        """The runs whose start has not handed over its outcome yet (see ``_starts_in_flight``)."""
        with self._outcomes_lock:
            handed_over = {outcome.run.id for outcome in self._outcomes}
        return [run_id for run_id in self._launching if run_id not in handed_over]

    # -- supervision ----------------------------------------------------------------

    def _supervise(self, now: datetime) -> None:
        """Steps 1-4 of a pass: everything about the jobs already running or starting."""
        self._write(self._pass_record(now), now)
        self._handle_cancels(now)
        self._enforce_timeouts(now)
        self._renew_leases(now)

    def _pass_record(self, now: datetime, *, poll_ends: bool = True) -> PassRecord:
        """What this pass records: the start outcomes handed over and the jobs that ended.

        The ends are polled first, so that a job that ended by now is recorded
        with its start in one move; the starts of jobs still running may be put
        off (``_put_off_running_starts``), except while the worker stops.
        """
        ended = self._poll_ended() if poll_ends else []
        outcomes = self._take_outcomes()
        if poll_ends and not self._closing:
            outcomes = self._put_off_running_starts(outcomes)
        else:
            self._put_off_since.clear()  # whatever was put off is in ``outcomes``, recorded now
        try:
            return PassRecord.build(outcomes, ended,
                                    running_move=self._launcher.running_move,
                                    end_move=lambda entry, code: self._end_move(entry, code, now))
        except BaseException:  # the started jobs would run on unsupervised: as ``PassRecord.abandon``
            for outcome in outcomes:
                if isinstance(outcome, Started):
                    outcome.entry.handle.kill()
            raise

    def _put_off_running_starts(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes to record now; the starts of jobs still running are handed back
        to a later pass, for up to ``RECORD_START_WITHIN`` after the pass first saw them.

        In a burst of short jobs a pass comes right after the starts it records,
        before those jobs end, so each run cost two writes of its row after its
        claim: Running, then its end. Put off, a job that ends within the delay
        is recorded Pending -> Running -> Completed in one write, with both
        events and its true start time; a longer one reads Pending a moment
        longer than its job has run, as it already did until the next pass.
        Nothing else waits: the ends and the next claim are written at once,
        and a put-off job's end wakes the loop as a supervised one's does.
        """
        clock = time.monotonic()
        recorded: list[Outcome] = []
        put_off: list[Outcome] = []
        since: dict[str, float] = {}  # only these: every start put off comes back through here
        for outcome in outcomes:
            if isinstance(outcome, Started):
                watch_end(outcome.entry, self._job_ended)  # before the poll: an end after it wakes the loop
                first = self._put_off_since.get(outcome.run.id, clock)
                if outcome.entry.handle.poll() is None and clock - first < RECORD_START_WITHIN:
                    put_off.append(outcome)
                    since[outcome.run.id] = first
                    continue
            recorded.append(outcome)
        self._put_off_since = since
        if put_off:
            with self._outcomes_lock:
                self._outcomes[:0] = put_off
            for outcome in put_off:
                self._launching[outcome.run.id] = outcome.run
        return recorded

    def _put_off_wakeup(self, now: datetime) -> list[datetime]:
        """When the oldest start put off must be recorded, however its job goes on."""
        if not self._put_off_since:
            return []
        left = min(self._put_off_since.values()) + RECORD_START_WITHIN - time.monotonic()
        return [now + timedelta(seconds=max(0.0, left))]

    def _gather_starts(self) -> None:
        """Wait, at most ``GATHER_STARTS``, until every start in flight has handed its
        outcome over.

        A pass costs the store about as much for one run as for eight: woken by
        the first start of a wave, a pass would record it alone and the next
        ones likewise. Starts take a millisecond or so each, and the jobs of a
        burst end in about as long: waiting for the wave records it whole, with
        the ends that came meanwhile, and claims the room they freed at once.
        No job of ours running means no burst under way: a wave starting from
        quiet is recorded as its starts come, so the first is recorded at once.
        """
        if not self._jobs:  # the first wave after a quiet spell: its first job is recorded at once
            return
        deadline = time.monotonic() + GATHER_STARTS
        while self._starts_in_flight() and (left := deadline - time.monotonic()) > 0:
            self._ended.clear()  # before looking again: a hand-over after the look sets it
            if not self._starts_in_flight():
                return
            self.rest()
            self._ended.wait(left)

    def _starts_in_flight(self) -> int:
        with self._outcomes_lock:
            return len(self._launching) - len(self._outcomes)

    def _take_outcomes(self) -> list[Outcome]:
        """The start outcomes handed over since the last pass. A start that raised
        what no worker may swallow is raised here, once every job started but not
        yet recorded is killed: their runs stay Pending until their lease runs out."""
        with self._outcomes_lock:
            taken, self._outcomes = self._outcomes, []
        for outcome in taken:
            self._launching.pop(outcome.run.id, None)
            if isinstance(outcome, Started):
                self._outages.reached(outcome.run.pool)
            elif isinstance(outcome, NotStarted) and outcome.unreachable is not None:
                self._outages.unreachable(outcome.run.pool, outcome.unreachable)
        shortages = [o.shortage for o in taken if isinstance(o, NotStarted) and o.shortage is not None]
        if shortages:
            started = sum(isinstance(o, Started) for o in taken)
            self._capacity.ran_short(len(self._jobs) + len(self._launching) + started, shortages[0])
            for outcome in taken:  # with the descriptors of the reserve, let go of just now
                if isinstance(outcome, NotStarted) and outcome.shortage is not None:
                    note(self._launcher.log_path(outcome.run.id), outcome.move[1].reason)
        errors = [outcome for outcome in taken if isinstance(outcome, StartError)]
        if errors:
            for outcome in taken:
                if isinstance(outcome, Started):
                    outcome.entry.handle.kill()
            raise errors[0].error
        return taken

    def _deliver(self, outcome: Outcome) -> None:
        """Called by the start threads (or the loop's) with each start's outcome."""
        with self._outcomes_lock:
            self._outcomes.append(outcome)
        self._job_ended()

    def _write(self, record: PassRecord, now: datetime) -> None:
        """Record the pass in one transaction, and act on what it settled.

        Each end is decided from the run as this worker last saw it, and
        stored only if the run is still in that state under this worker and
        attempt (compare-and-set). A run that changed meanwhile (a cancel
        landed) is re-read and re-decided, one by one: the rare case.
        """
        if record.moves:
            self._settle(record, self._recorded(record, lambda: apply_moves(self.store, record.moves)), now)

    def _recorded(self, record: PassRecord, write: Callable[[], list[Run | None]]) -> list[Run | None]:
        """``write()``'s answers; if it fails, see ``_unrecorded``."""
        try:
            return write()
        except BaseException as error:
            self._unrecorded(record, error)
            raise

    def _unrecorded(self, record: PassRecord, error: BaseException) -> None:
        """A pass could not record ``record``. The ended jobs are polled again by the next
        pass either way. If the store could not be reached or written for the moment (locked
        by another writer past the busy timeout, a daemon restarting under a remote worker),
        the starts are handed back to the next pass, their jobs running on: a blip must not
        cost runs their attempt. On anything else (a bug, an interrupt) the started jobs are
        killed, as no pass may be able to supervise them, and their runs are left Pending
        until their lease runs out."""
        if not isinstance(error, StoreError):
            record.abandon()
            return
        for job in record.started:
            if job.entry.run.id in record.chained:  # as claimed: the next pass decides again
                job.entry.run = evolve(job.entry.run, {"state": PENDING})
        handed_back: list[Outcome] = [*record.started, *record.not_started]
        with self._outcomes_lock:
            self._outcomes[:0] = handed_back
        for outcome in handed_back:
            self._launching[outcome.run.id] = outcome.run

    def _settle(self, record: PassRecord, results: list[Run | None], now: datetime) -> None:
        settled = record.settle(results)
        for entry in settled.running:
            self._supervise_job(entry, now)
        for entry, moved in settled.finished:
            self._noted_end(entry, moved)
        for entry in self._launcher.settle_lost(settled.lost):
            self._supervise_job(entry, now)
        self._settle_ended(record.ended, settled.ended, now)

    def _poll_ended(self) -> list[Ended]:
        """The jobs that ended since the last pass, with their exit codes.

        The runners that can are attended first: this thread reaps the jobs that
        ended and copies their output itself, where a runner's thread would have
        woken for each and taken the interpreter lock from this busy loop. Until
        ``rest``, those threads stay away.
        """
        self._attending = threading.get_ident()
        try:
            for runner in self._attended:
                runner.attend()  # type: ignore[attr-defined]
        finally:
            self._attending = None
        return [(entry, code) for entry in self._jobs.values() if (code := entry.handle.poll()) is not None]

    def _settle_ended(self, ended: list[Ended], results: list[Run | None], now: datetime) -> None:
        """Forget the ended jobs whose end was stored; re-decide those whose run changed."""
        changed = []
        for (entry, code), moved in zip(ended, results, strict=True):
            if moved is None:
                changed.append((entry, code))
                continue
            self._noted_end(entry, moved)
            del self._jobs[entry.run.id]
        for entry, code in changed:
            self._record_exit(entry, code, now)
            del self._jobs[entry.run.id]  # only once recorded: a store error retries on the next pass

    def _end_move(self, entry: Supervised, code: int, now: datetime) -> Move:
        run = entry.run
        outcome, reason = finish_outcome(run.state, code, entry.stop, run.timeout_seconds)
        return finish_request(run, outcome, reason, now, exit_code=code,
                              match={"worker": self.worker_id, "attempt": run.attempt})

    @staticmethod
    def _noted_end(entry: Supervised, moved: Run) -> None:
        attempt = f"attempt {entry.run.attempt} of {entry.run.max_attempts}"
        note(entry.log_path, f"{attempt} ended: {moved.state_reason}")

    def _record_exit(self, entry: Supervised, code: int, now: datetime) -> None:
        """Record the attempt's outcome, re-deciding if the run changed meanwhile (a cancel)."""
        for _ in range(3):
            current = self._still_ours(entry, code)
            if current is None:
                return
            outcome, reason = finish_outcome(current.state, code, entry.stop, current.timeout_seconds)
            moved = finish(self.store, current, outcome, reason, now, exit_code=code)
            if moved is not None:
                self._noted_end(entry, moved)
                return
        log.warning("%s: kept changing while its end (code %s) was recorded; left to recovery",
                    label(entry.run), code)

    def _still_ours(self, entry: Supervised, code: int) -> Run | None:
        """The run as stored, if it is still this attempt under this worker."""
        try:
            current = self.store.get_run(entry.run.id)
        except NotFound:
            current = None
        if (current is not None and current.state in ACTIVE and current.worker == self.worker_id
                and current.attempt == entry.run.attempt):
            return current
        log.warning("%s: job ended (code %s) but the run is no longer this worker's attempt; not recorded",
                    label(entry.run), code)
        return None

    def _handle_cancels(self, now: datetime, cancelling: list[Run] | None = None) -> None:
        """Stop the jobs of runs someone asked to cancel; finish cancels of runs without a job.
        ``cancelling``: those runs, if this pass already read them."""
        jobless: list[Move] = []
        if cancelling is None:
            cancelling = self.store.runs_in_states(CANCELLING, worker=self.worker_id)
        for run in cancelling:
            entry = self._jobs.get(run.id)
            if entry is None and run.id in self._launching:
                continue  # its job is starting: once recorded, it is stopped (``settle_lost``)
            if entry is None:
                jobless.append(move_request(run, CANCELLED, CANCELLED_BY_REQUEST, end_time=now))
                continue
            if run.attempt == entry.run.attempt:
                entry.run = run  # so that its end is recorded as the cancel it is, without a re-read
            if entry.stop is None:
                log.info("%s: cancel requested; stopping its job (grace %s)", label(run),
                         seconds_text(entry.grace))
                request_stop(entry, CANCEL)
        if jobless:
            apply_moves(self.store, jobless)

    def _enforce_timeouts(self, now: datetime) -> None:
        for entry in self._jobs.values():
            deadline = entry.deadline
            if entry.stop is None and deadline is not None and deadline <= now:
                log.info("%s: timeout of %s reached; stopping its job (grace %s)", label(entry.run),
                         seconds_text(entry.run.timeout_seconds or 0), seconds_text(entry.grace))
                request_stop(entry, TIMEOUT)

    def _renew_leases(self, now: datetime) -> None:
        """Every lease/3: extend our leases; a job whose lease was revoked is killed and forgotten."""
        if not self._jobs:
            self._next_renewal = None
            return
        if self._next_renewal is not None and now < self._next_renewal:
            return
        until = now + timedelta(seconds=self.lease_seconds)
        kept = self.store.renew_lease(self.worker_id, list(self._jobs), until)
        for run_id in set(self._jobs) - kept:
            entry = self._jobs.pop(run_id)
            log.warning("%s: lease lost (the run was recovered or changed elsewhere); killing its job",
                        label(entry.run))
            entry.handle.kill()
        self._next_renewal = now + timedelta(seconds=self.lease_seconds / 3)

    def _supervision_wakeups(self, now: datetime) -> list[datetime]:
        """When running jobs next need a pass: a timeout, a lease renewal, a cancel check."""
        if not self._jobs:
            return []
        waits = [now + timedelta(seconds=CANCEL_POLL)]
        if self._next_renewal is not None:
            waits.append(self._next_renewal)
        waits += [e.deadline for e in self._jobs.values() if e.stop is None and e.deadline is not None]
        return waits

    # -- orphans, claims, starts ------------------------------------------------------

    def _recover_expired(self, now: datetime) -> None:
        """Every lease/3: recover runs whose worker stopped renewing its lease."""
        if self._next_orphan_check is not None and now < self._next_orphan_check:
            return
        self._next_orphan_check = now + timedelta(seconds=self.lease_seconds / 3)
        expired = [run for run in self.store.expired_leases(now) if not self._holds(run.id)]
        recover_runs(self.store, self.runners, self._adopt(expired, now)[1], now)

    def _served_pools(self) -> list[tuple[str, Runner]]:
        """(pool, runner) for every pool this worker serves that exists and has a runner."""
        pools = self._resources.pools()
        if self.pools is not None:
            pools = [p for p in pools if p.name in self.pools]
            for name in sorted(self.pools - {p.name for p in pools}):
                self._warn_once(name, f"pool {name!r} does not exist (yet); its runs start once it does")
        served = []
        for pool in pools:
            runner = self.runners.get(pool.spec.get("type", ""))
            if runner is not None:
                served.append((pool.name, runner))
            elif self.pools is not None:  # named on purpose, so say why nothing happens
                self._warn_once(pool.name, f"pool {pool.name!r} is of type {pool.spec.get('type')!r}, "
                                           "which this worker cannot run; its runs wait for another worker")
        return served

    def _finish_and_claim(self, record: PassRecord, served: list[tuple[str, Runner]],
                          now: datetime) -> tuple[str, FinishedAndClaimed] | None:
        """Record the pass and claim one pool, in one store write; the pool and
        what the store did, or None when there is nothing to do together (no pool
        wants a claim, or the store cannot: a remote worker's, say).

        The pool is the first one with runs left due, else the first one a job
        ended in: a claim there is likely to find runs due.
        """
        fused = getattr(self.store, "finish_and_claim", None)
        pools = [name for name, _ in served]
        wanting = [name for name in pools if name in self._backlog or self._rehearsed_due(name, now)]
        wanting += [name for name in record.freed_pools() if name in pools]
        wanting = [name for name in wanting if not self._outages.retry_in(name)]
        if fused is None or not wanting:
            return None
        pool = wanting[0]
        self._backlog.discard(pool)  # until the store says otherwise (``_claim_and_start``)
        self._rehearsed.pop(pool, None)
        running = len(record.started) - len(record.chained) - len(record.ended)  # what settling will change in ``_jobs``
        result: FinishedAndClaimed = self._recorded(record, lambda: fused(
            record.moves, pool, now=now, worker=self.worker_id, max_count=self._claim_limit(pool, running),
            lease_seconds=self.lease_seconds))
        if result.resource_revision is not None:
            self._resources.adopt(result.resource_revision, result.deployments)
            self._adopted = True  # read in this pass's write: as fresh as the next pass's refresh
        if record.moves:
            self._settle(record, report_moves(record.moves, result.finished), now)
        return pool, result

    def _claim_and_start(self, pool: str, runner: Runner, now: datetime,
                         done: FinishedAndClaimed | None = None) -> list[datetime]:
        """Claim due runs of ``pool`` (the store applies limits and pauses) and start them;
        returns when the pool next needs a pass. ``done``: the claim this pass already made.

        Whether anything is due is asked first (a cheap read that spares the
        claim), except when runs were left due at the last pass: in a burst
        every pass has something to claim.
        """
        if done is not None:
            return self._start_claimed(pool, runner, now, done.claimed, lambda: done.next_due)
        if pool not in self._backlog and not self._rehearsed_due(pool, now):
            due = self.store.next_due_time(pool)
            if due is None or due > now:
                if due is not None and due - now <= REHEARSE_AHEAD:
                    self._rehearse(pool, runner, due, now)
                return [due] if due else []
        self._rehearsed.pop(pool, None)
        limit = self._claim_limit(pool)
        if limit == 0:  # short of resources, and as many jobs running as it had then; or its runner away
            self._backlog.add(pool)
            return [now + timedelta(seconds=self._outages.retry_in(pool) or BLOCKED_POLL)]
        self._backlog.discard(pool)  # until the store says otherwise below
        claimed = self.store.claim_runs(pool, now=now, worker=self.worker_id, max_count=limit,
                                        lease_seconds=self.lease_seconds)
        return self._start_claimed(pool, runner, now, claimed, lambda: self.store.next_due_time(pool))

    def unreachable_pools(self, now: datetime) -> list[dict[str, str]]:
        """The pools whose runner this worker cannot reach: each with the error and since when."""
        return [{"pool": pool, "error": error, "since": (now - timedelta(seconds=seconds)).isoformat()}
                for pool, error, seconds in self._outages.current()]

    def _claim_limit(self, pool: str, unsettled: int = 0) -> int:
        """How many runs a claim in ``pool`` may take: ``CLAIM_BATCH``, fewer while this
        worker keeps to what it could run when a start ran short of resources
        (``workers.capacity``), none or one while the pool's runner cannot be reached
        (``workers.outages``). ``unsettled``: jobs started minus jobs ended that this
        pass has not settled yet."""
        running = len(self._jobs) + len(self._launching) + unsettled
        return self._outages.room(pool, self._capacity.room(running, CLAIM_BATCH))

    def _rehearse(self, pool: str, runner: Runner, due: datetime, now: datetime) -> None:
        """Get ready, before ``due``, for the claim and the starts that come then.

        When hundreds of runs share a boundary, the first claim after it used
        to pay for what is done once: statements compiled and prepared, the
        pool, queues and deployments read, the runner's first-start set-up
        (about 10 ms of the first start). The claim is rehearsed at ``due``
        in a transaction the store rolls back, its deployments kept for
        rendering, the runner warmed, and the log files of the runs due then
        made and their jobs rendered in a thread (``Launcher.prepare``); the pass at ``due`` then claims
        at once, without asking first whether anything is due. Once per due time.
        """
        if self._rehearsed.get(pool) == due:
            return
        self._rehearsed[pool] = due
        rehearse = getattr(self.store, "rehearse_claim", None)
        coming: list[str] = []
        if rehearse is not None:  # a remote worker's store has none: its claims cost a request anyway
            result: FinishedAndClaimed = rehearse(pool, at=due, worker=self.worker_id, max_count=CLAIM_BATCH,
                                                  lease_seconds=self.lease_seconds)
            if result.resource_revision is not None:
                self._resources.adopt(result.resource_revision, result.deployments)
            coming = result.coming
        self._launcher.warm(runner)
        if coming:
            # done a little before ``due``: a render holds the interpreter lock, which the loop
            # waking at ``due`` would otherwise wait for
            seconds = max(0.0, (due - now).total_seconds() - PREPARE_MARGIN)
            self.preparing = self._launcher.prepare(coming, seconds, runner)

    def _rehearsed_due(self, pool: str, now: datetime) -> bool:
        """Has the due time of a rehearsed claim of ``pool`` come?"""
        due = self._rehearsed.get(pool)
        return due is not None and due <= now

    def _start_claimed(self, pool: str, runner: Runner, now: datetime, claimed: list[Run],
                       next_due: Callable[[], datetime | None]) -> list[datetime]:
        """Start the runs claimed in ``pool``; when the pool next needs a pass."""
        if log.isEnabledFor(logging.INFO):  # label() for hundreds of runs only when shown
            for run in claimed:
                log.info("%s: Scheduled -> Pending (%s)", label(run), run.state_reason)
        if claimed:
            self._start(claimed, runner, now)
        if len(claimed) == CLAIM_BATCH:
            self._backlog.add(pool)
            return [now]  # there may be more, and room for them
        due = next_due()
        if due is None:
            return []
        if due <= now:
            self._backlog.add(pool)
        # Due but not claimed: held back by a limit or a pause. A job of ours ending
        # wakes us anyway; the poll covers limits freed by other workers.
        return [due if due > now else now + timedelta(seconds=BLOCKED_POLL)]

    def _start(self, claimed: list[Run], runner: Runner, now: datetime) -> None:
        """Launch the claimed runs' jobs; the next pass records how each start went
        (each hand-over wakes the loop for it), with the ends and the next claim."""
        for run in claimed:
            self._launching[run.id] = run
        try:
            self._launcher.launch(claimed, runner, now, self._resources, self._deliver)
        except BaseException:  # nothing was started (see ``Launcher.launch``): recovery moves them on
            for run in claimed:
                self._launching.pop(run.id, None)
            raise

    def _supervise_job(self, entry: Supervised, now: datetime) -> None:
        self._jobs[entry.run.id] = entry
        if self._next_renewal is None:
            self._next_renewal = now + timedelta(seconds=self.lease_seconds / 3)
        watch_end(entry, self._job_ended)
        if entry.run.state == CANCELLING:  # cancelled while it started
            request_stop(entry, CANCEL)

    def _job_ended(self) -> None:
        """Called from a waiter thread: wake whoever waits for the next pass. Not when this
        pass reaped the job itself (``_poll_ended``): it records the end right after."""
        self._ended.set()
        if self._attending == threading.get_ident():
            return
        self._wake_loop()

    def _wake_loop(self) -> None:
        """Wake the loop; also called from an outage's probe thread (``workers.outages``): the
        pool may be claimed from again, or its next try is due later, and the next pass must know."""
        try:
            self.on_change()
        except Exception:
            log.exception("on_change callback failed")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # -- shutdown -------------------------------------------------------------------------

    def _cancel_all(self, now_fn: Callable[[], datetime]) -> None:
        """Grace is over: cancel every job still running and record it Cancelled."""
        stopping = [entry for entry in self._jobs.values() if entry.stop is None]  # the others keep their reason
        moves = [move_request(entry.run, CANCELLING, SHUTTING_DOWN, expect={RUNNING})
                 for entry in stopping if entry.run.state == RUNNING]
        moved: list[Run | None] = []
        try:
            if moves and self._store_away is None:
                self._while_stopping(lambda: moved.extend(apply_moves(self.store, moves)))
        finally:  # even if the store is gone: the jobs must stop
            for entry in stopping:
                request_stop(entry, SHUTDOWN)
        by_id = {run.id: run for run in moved if run is not None}
        for entry in stopping:
            entry.run = by_id.get(entry.run.id, entry.run)
        self.rest()  # the stoppers wait for the ends that the runners' threads see
        for entry in list(self._jobs.values()):
            if entry.stopper is not None:
                entry.stopper.join(entry.grace + STOP_JOIN_MARGIN)
        if self._store_away is None:  # a store that refused the last write is not waited for again
            self._while_stopping(lambda: self._write(self._pass_record(now_fn()), now_fn()))
