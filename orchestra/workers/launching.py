"""Starting a claimed run: render its job, launch it, mark it Running.

Called by ``LocalWorker`` for each run it claimed (state Pending). Each way a
start can fail ends the attempt in a plain-words state, so no claimed run is
left Pending:

* the job does not render (bad parameters, a deployment deleted since the
  claim): Failed, never retried, since the same inputs render the same way;
* the runner cannot launch it (``LaunchError``, a log file that cannot be
  created): Failed, retried per the deployment's ``retries`` like any failure
  (a missing mount or executable may be back by the next attempt);
* the run changed while we launched (a cancel arrived): the job is kept and
  stopped by the next cancel pass, or killed if the run is no longer ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestra.errors import InvalidInput, NotFound, StoreError
from orchestra.jobs.template import RenderedJob
from orchestra.reconcile.jobs import prepare_job
from orchestra.runners.base import LaunchError, RunHandle, Runner
from orchestra.store import CANCELLING, FAILED, PENDING, RUNNING, Run, Store
from orchestra.workers.outcomes import grace_seconds, label
from orchestra.workers.reporting import finish, move, note
from orchestra.workers.supervision import Supervised

log = logging.getLogger("orchestra.worker")


@dataclass(frozen=True)
class Launcher:
    """What starting a run needs besides the run and its runner."""

    store: Store
    worker_id: str
    log_dir: Path
    python: str

    def log_path(self, run_id: str) -> Path:
        return self.log_dir / f"{run_id}.log"

    def launch(self, run: Run, runner: Runner, now: datetime) -> Supervised | None:
        """Start the job of the Pending ``run``; the job's ``Supervised`` if one now runs."""
        rendered = self._render(run, now)
        if rendered is None:
            return None
        path = self.log_path(run.id)
        note(path, f"attempt {run.attempt} of {run.max_attempts} started at {now.isoformat()}")
        try:
            handle = runner.start(run.id, rendered.job, path)
        except (LaunchError, OSError) as err:
            reason = f"cannot start the job: {err}"
        except Exception as err:  # a runner bug: fail the attempt rather than leave it Pending
            log.exception("%s: starting the job failed", label(run))
            reason = f"cannot start the job (internal error): {err!r}"
        else:
            entry = Supervised(run, handle, now, grace_seconds(rendered.job), path)
            return self._mark_running_or_kill(entry, rendered, now)
        note(path, reason)
        finish(self.store, run, FAILED, reason, now)
        return None

    def _render(self, run: Run, now: datetime) -> RenderedJob | None:
        """The run's job, or None after failing the run for good (a render error is
        deterministic: retrying the same inputs cannot help)."""
        # The slot, not the retry's due time: every attempt of a slot sees the same
        # ORCHESTRA_SCHEDULED_TIME, so a job keyed on it stays idempotent across retries.
        scheduled = (run.slot_time or run.scheduled_time).isoformat()
        try:
            return prepare_job(self.store, run.deployment, parameters=run.parameters,
                               job_variables=run.job_variables, run_id=run.id,
                               scheduled_time=scheduled, python=self.python).rendered
        except (InvalidInput, NotFound) as err:
            reason = f"cannot render the job: {err}"
        except StoreError:
            raise  # infrastructure: the lease runs out and the run is recovered
        except Exception as err:  # a bug must not leave the run Pending forever
            log.exception("%s: rendering the job failed", label(run))
            reason = f"cannot render the job (internal error): {err!r}"
        note(self.log_path(run.id), f"attempt {run.attempt} of {run.max_attempts}: {reason}")
        finish(self.store, run, FAILED, reason, now, retry=False)
        return None

    def _mark_running_or_kill(self, entry: Supervised, rendered: RenderedJob, now: datetime) -> Supervised | None:
        try:
            return self._mark_running(entry, rendered, now)
        except BaseException:  # the store failed: a job nobody supervises must not run on
            entry.handle.kill()
            raise

    def _mark_running(self, entry: Supervised, rendered: RenderedJob, now: datetime) -> Supervised | None:
        run, handle = entry.run, entry.handle
        fields: dict[str, Any] = {
            "job": rendered.job, "variables_patch": rendered.variables_patch,
            "runner_ident": handle.ident, "start_time": run.start_time or now,
        }
        running = move(self.store, run, RUNNING, f"started by {self.worker_id}", expect={PENDING}, **fields)
        if running is not None:
            entry.run = running
            return entry
        return self._after_lost_start(entry, handle)

    def _after_lost_start(self, entry: Supervised, handle: RunHandle) -> Supervised | None:
        """The run changed between claim and start: keep the job if the run is
        ours and being cancelled (the cancel pass stops it), else kill it."""
        try:
            current = self.store.get_run(entry.run.id)
        except NotFound:
            current = None
        if current is not None and current.state == CANCELLING and current.worker == self.worker_id:
            entry.run = current
            return entry
        log.warning("%s: changed while its job started (now %s); killing the job", label(entry.run),
                    current.state if current else "deleted")
        handle.kill()
        return None
