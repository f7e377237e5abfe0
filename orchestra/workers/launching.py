"""Starting claimed runs: render their jobs and launch them, without waiting.

Called by ``LocalWorker`` with the runs one claim returned (state Pending).
The jobs are rendered in the loop's thread from deployments and pools read
once for the whole claim (``ResourceCache``), then started: in the start
threads when the runner's ``start`` is thread-safe (``runners.base.
start_concurrency``; a launch mostly waits for the kernel), else at once in
the loop's thread. The loop does not wait for the starts: each outcome is
handed to the worker's ``deliver`` callback as soon as it is known, and the
worker records it in its next pass, in the same store write as the ends and
the next claim (``workers.recording``). So the starts of a wave cost no write
of their own, and a job that started and already ended costs one write.

Runs a rehearsed claim names as about to fall due are prepared ahead
(``prepare``, in a thread while the worker waits): their log files made and
their jobs rendered, so that at the due time a start only opens its log and
takes its job, as long as what the job was rendered from still holds.

Each way a start can fail ends the attempt in a plain-words state, so no
claimed run is left Pending:

* the job does not render (bad parameters, a deployment deleted since the
  claim): Failed, never retried, since the same inputs render the same way;
* the runner cannot launch it (``LaunchError``, a log file that cannot be
  created): Failed, retried per the deployment's ``retries`` like any failure
  (a missing mount or executable may be back by the next attempt);
* the worker or its machine is out of open files, processes or memory
  (``runners.base.is_shortage``): back to Scheduled, the same attempt in the
  same place in the queue, since nothing was wrong with the job; the worker
  then takes no more runs than it runs (``LocalWorker``);
* what runs the jobs cannot be reached, and nothing was made
  (``runners.base.Unreachable``: a Docker engine that is down): back to
  Scheduled likewise; the worker leaves the pool alone for a while
  (``workers.outages``);
* the run changed while we launched (a cancel arrived): the job is kept and
  stopped by the next cancel pass, or killed if the run is no longer ours
  (``settle_lost``);
* the start raised what no worker may swallow (``BaseException``): handed
  over as ``StartError``, which the worker re-raises after killing every job
  it has not recorded yet.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestra.errors import InvalidInput, NotFound, StoreError
from orchestra.jobs.template import RenderedJob
from orchestra.runners.base import LaunchError, Runner, RunHandle, Unreachable, is_shortage, start_concurrency
from orchestra.store import CANCELLING, FAILED, PENDING, PUT_BACK, RUNNING, SCHEDULED, Run, Store, StoredResource
from orchestra.workers.holding import HeldJobs
from orchestra.workers.outcomes import grace_seconds, label
from orchestra.workers.rendering import render_run
from orchestra.workers.reporting import Move, finish_request, move_request, note
from orchestra.workers.resource_cache import ResourceCache
from orchestra.workers.supervision import Supervised

log = logging.getLogger("orchestra.worker")


@dataclass(frozen=True)
class Started:
    """A job that runs, and what it was rendered as (to be stored on its run)."""

    entry: Supervised
    rendered: RenderedJob

    @property
    def run(self) -> Run:
        return self.entry.run


@dataclass(frozen=True)
class NotStarted:
    """A run whose job could not start: the move that ends its attempt, or that puts
    it back in the queue when the worker ran short (``shortage``: what it ran short of)
    or could not reach its runner (``unreachable``)."""

    move: Move
    shortage: OSError | None = None
    unreachable: Unreachable | None = None

    @property
    def run(self) -> Run:
        return self.move[0]


@dataclass(frozen=True)
class StartError:
    """A start that raised what no worker may swallow (``KeyboardInterrupt``, say)."""

    run: Run
    error: BaseException


Outcome = Started | NotStarted | StartError

_AHEAD_LIMIT = 4000  # jobs rendered ahead kept at most (the rehearsal names up to 2,000 runs)


def _render_inputs(run: Run) -> tuple[Any, ...]:
    """What of a run its job is rendered from (``render_run``)."""
    return run.parameters, run.job_variables, run.slot_time or run.scheduled_time


@dataclass(frozen=True)
class _Ahead:
    """A job rendered before its run was claimed, and what it was rendered from."""

    inputs: tuple[Any, ...]
    deployment: StoredResource
    pool: StoredResource
    rendered: RenderedJob

    def rendered_from(self, run: Run, deployment: StoredResource, pool: StoredResource) -> bool:
        """Would ``run`` render the same now? Only if its inputs, deployment and pool are as they were
        (compared by value: the prepare thread read its own copies)."""
        return self.inputs == _render_inputs(run) and self.deployment == deployment and self.pool == pool


@dataclass(frozen=True)
class Launcher:
    """What starting a run needs besides the run and its runner."""

    store: Store
    worker_id: str
    log_dir: Path
    python: str
    # run id -> its job rendered ahead (``prepare``): written by the prepare thread, popped by starts
    _ahead: dict[str, _Ahead] = field(default_factory=dict, compare=False, repr=False)
    # the processes of jobs rendered ahead, made and held until their start (``prepare``)
    held: HeldJobs = field(default_factory=HeldJobs, compare=False, repr=False)

    def log_path(self, run_id: str) -> Path:
        return self.log_dir / f"{run_id}.log"

    def warm(self, runner: Runner) -> None:
        """Do before runs fall due what their first start would do once: make the log
        directory, start the start threads, and let the runner set itself up."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # the start that needs it says so, as a failed run
            log.debug("cannot make the log directory %s yet: %s", self.log_dir, err)
        threads = start_concurrency(runner)
        if threads > 1:
            _start_threads(threads)
        warm = getattr(runner, "warm", None)  # optional: see ``runners.base.Runner``
        if warm is not None:
            warm()

    def prepare(self, run_ids: Sequence[str], seconds: float, runner: Runner | None = None) -> threading.Thread:
        """Get the runs about to start ready, in a thread that gives up after ``seconds``
        (when they fall due: the starts then do the rest themselves): make their
        empty log files, then render their jobs.

        Making a file can cost far more than opening one: ext4 without a journal
        (this project's test machines) steps over every inode freed in the last
        minutes, 0.1-0.45 ms a file after a test run, against 5 us to open it. A
        burst's starts paid that, and about 0.1 ms a run for rendering, in the
        loop's thread; done while the worker waits for them, a start only opens
        its log and takes its job (``_render`` checks that what it was rendered
        from still holds). An existing log (an earlier attempt's) is left as it is,
        and the log of a run that does not start after all stays empty, which
        reads as a missing one does.
        """
        deadline = time.monotonic() + seconds
        thread = threading.Thread(target=self._prepare, args=(list(run_ids), deadline, runner),
                                  name="orchestra-prepare", daemon=True)
        thread.start()
        return thread

    def _prepare(self, run_ids: list[str], deadline: float, runner: Runner | None = None) -> None:
        """The prepare thread: every log first (the dearer part, and needed by every
        start), then the jobs, in the order the runs fall due; nothing it meets is an error."""
        made = make_empty_files([self.log_path(run_id) for run_id in run_ids], deadline)
        if made < len(run_ids) or time.monotonic() >= deadline:
            return
        try:
            runs = self.store.get_runs(run_ids)
            deployments = self.store.get_resources("Deployment", {run.deployment for run in runs.values()})
            pools = {pool.name: pool for pool in self.store.list_resources("WorkPool")}
        except Exception as err:  # noqa: BLE001 - best effort (the store may be closing): the starts render
            log.debug("cannot render jobs ahead: %s", err)
            return
        if len(self._ahead) > _AHEAD_LIMIT:  # runs prepared and never started (cancelled, say)
            self._ahead.clear()
        for run_id in run_ids:
            if time.monotonic() >= deadline:
                return
            run = runs.get(run_id)
            if run is None or run.deployment not in deployments:
                continue
            deployment = deployments[run.deployment]
            pool = pools.get(deployment.spec.get("pool", ""))
            if pool is None:
                continue
            try:
                rendered = render_run(deployment, pool, run, self.python)
            except Exception:  # noqa: BLE001 - the start renders again and says why
                continue
            self._ahead[run_id] = _Ahead(_render_inputs(run), deployment, pool, rendered)
        hold = getattr(runner, "hold", None)  # optional: see ``ProcessRunner.hold``
        if hold is not None:
            self._hold(run_ids, hold, deadline)

    def _hold(self, run_ids: list[str], hold: Callable[[str, dict[str, Any]], Any], deadline: float) -> None:
        """Make the processes of the jobs rendered ahead, held until their starts."""
        self.held.drop_expired()
        for run_id in run_ids:
            if time.monotonic() >= deadline or not self.held.room():
                return
            ahead = self._ahead.get(run_id)
            if ahead is None:
                continue
            try:
                made = hold(run_id, ahead.rendered.runnable())
            except Exception:  # noqa: BLE001 - best effort: the start launches it the ordinary way
                log.debug("cannot hold the job of run %s", run_id, exc_info=True)
                continue
            if made is not None:
                self.held.add(run_id, ahead.rendered, made, deadline - time.monotonic())

    def launch(self, runs: Sequence[Run], runner: Runner, now: datetime, resources: ResourceCache,
               deliver: Callable[[Outcome], None]) -> None:
        """Start the jobs of the Pending ``runs``; each outcome goes to ``deliver``,
        from a start thread or from this one, exactly once per run.

        Every job is rendered before the first starts, in this thread (the
        resource cache is not thread-safe): a store error while rendering
        then raises here with no job started and nothing handed over.
        """
        resources.prefetch(run.deployment for run in runs)
        rendered = [(run, self._render(run, resources)) for run in runs]
        threads = start_concurrency(runner)
        pool = _start_threads(threads) if threads > 1 else None
        for run, job in rendered:
            if pool is None or not isinstance(job, RenderedJob):
                deliver(self._outcome(run, job, runner, now))
            else:
                pool.submit(lambda run=run, job=job: deliver(self._outcome(run, job, runner, now)))

    def _outcome(self, run: Run, job: RenderedJob | str, runner: Runner, now: datetime) -> Outcome:
        try:
            return self._start(run, job, runner, now)
        except BaseException as error:  # handed over: the loop's thread decides what it means
            return StartError(run, error)

    def running_move(self, started: Started) -> Move:
        """Pending -> Running, if the run is still this worker's attempt, with what it was rendered as."""
        run, rendered = started.entry.run, started.rendered
        return move_request(run, RUNNING, f"started by {self.worker_id}", expect={PENDING},
                            match={"worker": self.worker_id, "attempt": run.attempt}, job=rendered.job,
                            variables_patch=rendered.variables_patch, runner_ident=started.entry.handle.ident,
                            start_time=run.start_time or started.entry.started)

    def settle_lost(self, lost: Sequence[Supervised]) -> list[Supervised]:
        """Runs that changed between claim and start: keep each job whose run is
        ours and being cancelled (the cancel pass stops it), kill the others."""
        if not lost:
            return []
        try:
            current = self.store.get_runs([entry.run.id for entry in lost])
        except BaseException:
            for entry in lost:
                entry.handle.kill()
            raise
        kept = []
        for entry in lost:
            now_stored = current.get(entry.run.id)
            if now_stored is not None and now_stored.state == CANCELLING and now_stored.worker == self.worker_id:
                entry.run = now_stored
                kept.append(entry)
            else:
                log.warning("%s: changed while its job started (now %s); killing the job", label(entry.run),
                            now_stored.state if now_stored else "deleted")
                entry.handle.kill()
        return kept

    def _start(self, run: Run, rendered: RenderedJob | str, runner: Runner, now: datetime) -> Started | NotStarted:
        """The started job, or the move that ends the attempt of a run that cannot start.
        Thread-safe: touches the store not at all, and only this run's log."""
        if not isinstance(rendered, RenderedJob):
            note(self.log_path(run.id), f"attempt {run.attempt} of {run.max_attempts}: {rendered}")
            return NotStarted(finish_request(run, FAILED, rendered, now, retry=False))
        path = self.log_path(run.id)
        started = f"attempt {run.attempt} of {run.max_attempts} started at {now.isoformat()}"
        try:
            handle = self._start_held(run, rendered, runner, path, started)
            if handle is None:
                note(path, started)
                handle = runner.start(run.id, rendered.runnable(), path, deployment=run.deployment, pool=run.pool,
                                      attempt=run.attempt)
        except (LaunchError, OSError) as err:
            if is_shortage(err):
                return self._put_back(run, path, f"this worker is short of resources ({err.strerror or err})",
                                      shortage=err)
            if isinstance(err, Unreachable):
                return self._put_back(run, path, str(err), unreachable=err)
            reason = f"cannot start the job: {err}"
        except Exception as err:  # a runner bug: fail the attempt rather than leave it Pending
            log.exception("%s: starting the job failed", label(run))
            reason = f"cannot start the job (internal error): {err!r}"
        else:
            return Started(Supervised(run, handle, now, grace_seconds(rendered.job), path), rendered)
        note(path, reason)
        return NotStarted(finish_request(run, FAILED, reason, now))

    @staticmethod
    def _put_back(run: Run, path: Path, why: str, *, shortage: OSError | None = None,
                  unreachable: Unreachable | None = None) -> NotStarted:
        """The run back in the queue, its attempt unspent: the job never ran, and nothing
        in it is to blame. Out of descriptors, the note in its log would find none
        either: the worker writes it once it has let go of its reserve (``LocalWorker``)."""
        reason = f"{PUT_BACK}{why}; the run waits"
        if shortage is None:
            note(path, reason)
        match = {"worker": run.worker, "attempt": run.attempt}  # still this worker's claim of this attempt
        return NotStarted(move_request(run, SCHEDULED, reason, match=match), shortage=shortage,
                          unreachable=unreachable)

    def _start_held(self, run: Run, rendered: RenderedJob, runner: Runner, path: Path,
                    started: str) -> RunHandle | None:
        """The run's job released from the process held for this very render, if there is one;
        the ``started`` note in its log then comes with it."""
        held = self.held.take(run.id, rendered)
        if held is None:
            return None
        try:
            handle: RunHandle = runner.start_held(held, path, started)  # type: ignore[attr-defined]
        except OSError as err:  # its holder is gone (or its log cannot open): start it the ordinary way
            held.drop()
            log.debug("%s: its held job could not be released (%s); starting it anew", label(run), err)
            return None
        return handle

    def _render(self, run: Run, resources: ResourceCache) -> RenderedJob | str:
        """The run's job, or why it cannot be rendered (a render error is
        deterministic: retrying the same inputs cannot help)."""
        try:
            deployment = resources.deployment(run.deployment)
            pool = resources.pool(deployment.spec["pool"])
            ahead = self._ahead.pop(run.id, None)
            if ahead is not None and ahead.rendered_from(run, deployment, pool):
                return ahead.rendered
            return render_run(deployment, pool, run, self.python)
        except (InvalidInput, NotFound) as err:
            return f"cannot render the job: {err}"
        except StoreError:
            raise  # infrastructure: the lease runs out and the run is recovered
        except Exception as err:  # a bug must not leave the run Pending forever
            log.exception("%s: rendering the job failed", label(run))
            return f"cannot render the job (internal error): {err!r}"


def make_empty_files(paths: Sequence[Path], deadline: float) -> int:
    """Create those of ``paths`` that do not exist, in order, until ``time.monotonic()``
    passes ``deadline``; how many were looked at. Errors are left to the start that needs the file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC  # never O_TRUNC: a log is only ever appended to
    for done, path in enumerate(paths):
        if time.monotonic() >= deadline:
            return done
        try:
            os.close(os.open(path, flags, 0o666))
        except OSError as err:
            log.debug("cannot make the log %s ahead: %s", path, err)
            return done
    return len(paths)


@functools.cache
def _start_threads(count: int) -> ThreadPoolExecutor:
    """Threads that start jobs, shared by every launcher of the process and made on
    first use (a daemon that runs no job starts none)."""
    return ThreadPoolExecutor(count, thread_name_prefix="orchestra-start")
