"""Starting claimed runs: render their jobs, launch them, mark them Running.

Called by ``LocalWorker`` with the runs one claim returned (state Pending).
The jobs are rendered from deployments and pools read once for the whole
claim (``ResourceCache``), started (several at once when the runner's
``start`` is thread-safe, see ``runners.base.start_concurrency``: a launch
mostly waits for the kernel, so a burst drains faster), and then recorded
in one store transaction: every started run becomes Running, every run that
could not start ends its attempt. Each way a start can fail ends the attempt
in a plain-words state, so no claimed run is left Pending:

* the job does not render (bad parameters, a deployment deleted since the
  claim): Failed, never retried, since the same inputs render the same way;
* the runner cannot launch it (``LaunchError``, a log file that cannot be
  created): Failed, retried per the deployment's ``retries`` like any failure
  (a missing mount or executable may be back by the next attempt);
* the run changed while we launched (a cancel arrived): the job is kept and
  stopped by the next cancel pass, or killed if the run is no longer ours
  (``settle_lost``).

If the store fails while the starts are recorded, every job just started is
killed: a job nobody supervises must not run on. Its run stays Pending until
its lease runs out and recovery moves it on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from orchestra.errors import InvalidInput, NotFound, StoreError
from orchestra.jobs.template import RenderedJob
from orchestra.runners.base import LaunchError, Runner, start_concurrency
from orchestra.store import CANCELLING, FAILED, PENDING, RUNNING, Run, Store
from orchestra.workers.outcomes import grace_seconds, label
from orchestra.workers.rendering import render_run
from orchestra.workers.reporting import Move, apply_moves, finish_request, move_request, note
from orchestra.workers.resource_cache import ResourceCache
from orchestra.workers.supervision import Supervised

log = logging.getLogger("orchestra.worker")


@dataclass
class Launched:
    """What became of one claim's runs: jobs whose runs are Running (or were
    cancelled while starting), and jobs whose runs changed under them."""

    running: list[Supervised] = field(default_factory=list)
    lost: list[Supervised] = field(default_factory=list)


@dataclass(frozen=True)
class _Started:
    """A job that runs, and what it was rendered as (to be stored on its run)."""

    entry: Supervised
    rendered: RenderedJob


@dataclass(frozen=True)
class Launcher:
    """What starting a run needs besides the run and its runner."""

    store: Store
    worker_id: str
    log_dir: Path
    python: str

    def log_path(self, run_id: str) -> Path:
        return self.log_dir / f"{run_id}.log"

    def launch(self, runs: Sequence[Run], runner: Runner, now: datetime, resources: ResourceCache) -> Launched:
        """Start the jobs of the Pending ``runs``; record them all in one transaction."""
        resources.prefetch(run.deployment for run in runs)  # before any job starts: a store error here leaks none
        # Rendered here, in the loop's thread: the resource cache is not thread-safe.
        rendered = [(run, self._render(run, resources)) for run in runs]
        started: list[_Started] = []
        ended: list[Move] = []
        try:
            for outcome in self._start_all(rendered, runner, now):
                if isinstance(outcome, _Started):
                    started.append(outcome)
                else:
                    ended.append(outcome)
            return self._record(started, ended)
        except BaseException:
            for job in started:
                job.entry.handle.kill()
            raise

    def _start_all(self, rendered: list[tuple[Run, RenderedJob | str]], runner: Runner,
                   now: datetime) -> Iterator[_Started | Move]:
        """Each run's outcome, in the runs' order; several started at once if the runner allows.

        Whatever fails, no job is left running unseen: a job started by a
        task whose neighbour raised is killed before the error goes on.
        """
        threads = start_concurrency(runner)
        if threads <= 1 or len(rendered) <= 1:
            for run, job in rendered:
                yield self._start(run, job, runner, now)
            return
        pool = _start_threads(threads)
        futures = [pool.submit(self._start, run, job, runner, now) for run, job in rendered]
        try:
            outcomes = [future.result() for future in futures]
        except BaseException:
            wait(futures)  # the other tasks may still start their jobs: let them, then kill them all
            _kill_started(futures)
            raise
        yield from outcomes

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

    def _start(self, run: Run, rendered: RenderedJob | str, runner: Runner, now: datetime) -> _Started | Move:
        """The started job, or the move that ends the attempt of a run that cannot start.
        Thread-safe: touches the store not at all, and only this run's log."""
        if not isinstance(rendered, RenderedJob):
            note(self.log_path(run.id), f"attempt {run.attempt} of {run.max_attempts}: {rendered}")
            return finish_request(run, FAILED, rendered, now, retry=False)
        path = self.log_path(run.id)
        note(path, f"attempt {run.attempt} of {run.max_attempts} started at {now.isoformat()}")
        try:
            handle = runner.start(run.id, rendered.runnable(), path)
        except (LaunchError, OSError) as err:
            reason = f"cannot start the job: {err}"
        except Exception as err:  # a runner bug: fail the attempt rather than leave it Pending
            log.exception("%s: starting the job failed", label(run))
            reason = f"cannot start the job (internal error): {err!r}"
        else:
            return _Started(Supervised(run, handle, now, grace_seconds(rendered.job), path), rendered)
        note(path, reason)
        return finish_request(run, FAILED, reason, now)

    def _render(self, run: Run, resources: ResourceCache) -> RenderedJob | str:
        """The run's job, or why it cannot be rendered (a render error is
        deterministic: retrying the same inputs cannot help)."""
        try:
            deployment = resources.deployment(run.deployment)
            return render_run(deployment, resources.pool(deployment.spec["pool"]), run, self.python)
        except (InvalidInput, NotFound) as err:
            return f"cannot render the job: {err}"
        except StoreError:
            raise  # infrastructure: the lease runs out and the run is recovered
        except Exception as err:  # a bug must not leave the run Pending forever
            log.exception("%s: rendering the job failed", label(run))
            return f"cannot render the job (internal error): {err!r}"

    def _record(self, started: list[_Started], ended: list[Move]) -> Launched:
        """One transaction: started runs become Running, the others end their attempt."""
        moves = [self._running_move(job) for job in started] + ended
        results = apply_moves(self.store, moves)
        launched = Launched()
        for job, running in zip(started, results, strict=False):  # the results of ``ended`` follow
            if running is not None:
                job.entry.run = running
                launched.running.append(job.entry)
            else:
                launched.lost.append(job.entry)
        return launched

    def _running_move(self, job: _Started) -> Move:
        run, rendered = job.entry.run, job.rendered
        return move_request(run, RUNNING, f"started by {self.worker_id}", expect={PENDING},
                            match={"worker": self.worker_id, "attempt": run.attempt}, job=rendered.job,
                            variables_patch=rendered.variables_patch, runner_ident=job.entry.handle.ident,
                            start_time=run.start_time or job.entry.started)


@functools.cache
def _start_threads(count: int) -> ThreadPoolExecutor:
    """Threads that start jobs, shared by every launcher of the process and made on
    first use (a daemon that runs no job starts none)."""
    return ThreadPoolExecutor(count, thread_name_prefix="orchestra-start")


def _kill_started(futures: list[Future[_Started | Move]]) -> None:
    for future in futures:
        if future.exception() is None and isinstance(outcome := future.result(), _Started):
            outcome.entry.handle.kill()
