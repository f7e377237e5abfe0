"""Jobs that outlive their daemon: follow them again instead of crashing their runs.

A container keeps running when the daemon that started it dies; DESIGN.md
asks that the next daemon adopt it (find it by its ident, carry on streaming
its log, record its end) rather than start the attempt again; a container
started for a Pending run whose daemon died before recording the start is
found by its labels (run and attempt) and adopted the same way. ``LocalWorker``
calls ``adopt_orphans`` before the crash recovery of ``recovery``; runners
without an ``adopt`` method (process jobs never outlive their daemon) adopt
nothing, and their orphans are recovered as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from orchestra.jobs.template import RenderedJob
from orchestra.runners.base import Runner, Unrecorded
from orchestra.store import CANCELLING, PENDING, RUNNING, Run, Store
from orchestra.workers.outcomes import grace_seconds, label
from orchestra.workers.recovery import orphan_cause
from orchestra.workers.supervision import Supervised

log = logging.getLogger("orchestra.worker")
Render = Callable[[Run], RenderedJob | None]  # the job an unrecorded start ran, where it can be told


def adopt_orphans(store: Store, runners: Mapping[str, Runner], runs: list[Run], now: datetime, *, worker: str,
                  lease_seconds: float, log_path: Callable[[str], Path],
                  render: Render | None = None) -> tuple[list[Supervised], list[Run]]:
    """The orphans this worker now supervises, and the runs left for crash recovery."""
    pool_types = {p.name: p.spec.get("type") for p in store.list_resources("WorkPool")}
    adopted: list[Supervised] = []
    left: list[Run] = []
    for run in runs:
        runner = runners.get(pool_types.get(run.pool) or "")
        outcome = _adopt(store, runner, run, now, worker, lease_seconds, log_path(run.id), render)
        if isinstance(outcome, Supervised):
            adopted.append(outcome)
        elif outcome is None:
            left.append(run)
    return adopted, left


def _adopt(store: Store, runner: Runner | None, run: Run, now: datetime, worker: str, lease_seconds: float,
           path: Path, render: Render | None = None) -> Supervised | bool | None:
    """A supervised job; None to recover the run as crashed; False to leave it for the next check."""
    cause = orphan_cause(run, now)
    if runner is None or cause is None:
        return None
    if run.runner_ident and run.state in (RUNNING, CANCELLING):
        return _adopt_recorded(store, runner, run, cause, now, worker, lease_seconds, path)
    if not run.runner_ident and run.state == PENDING:
        return _adopt_unrecorded(store, runner, run, cause, now, worker, lease_seconds, path, render)
    return None


def _adopt_recorded(store: Store, runner: Runner, run: Run, cause: str, now: datetime, worker: str,
                    lease_seconds: float, path: Path) -> Supervised | bool | None:
    """Follow the job the run records (its ident) again, if it is still there."""
    adopt = getattr(runner, "adopt", None)
    if adopt is None or run.runner_ident is None:
        return None
    try:
        handle = adopt(run.runner_ident, path, run_id=run.id)
    except Exception as exc:  # the engine cannot be asked now: neither adopt nor crash the run yet
        log.warning("%s: cannot check its job %s now: %s", label(run), run.runner_ident, exc)
        return False
    if handle is None:
        return None
    taken = store.take_over(run.id, from_worker=run.worker, attempt=run.attempt, worker=worker,
                            lease_until=now + timedelta(seconds=lease_seconds),
                            reason=f"adopted by {worker} ({cause}); its job {run.runner_ident[:19]} still runs")
    if taken is None:  # another daemon was faster: its job, not ours to stop
        handle.detach()
        return False
    log.info("%s: adopted its running job %s", label(run), run.runner_ident[:19])
    return Supervised(taken, handle, run.start_time or now, grace_seconds(run.job or {}), path)


def _adopt_unrecorded(store: Store, runner: Runner, run: Run, cause: str, now: datetime, worker: str,
                      lease_seconds: float, path: Path, render: Render | None = None) -> Supervised | bool | None:
    """Follow the job a dead worker started for this attempt but never recorded, if its runner
    can find one (a container labelled with the run and attempt): Pending -> Running, so the
    attempt runs once instead of being crashed, and retried next to its still running job.
    Its rendered job is recorded too where ``render`` can tell what it was."""
    find, adopt = getattr(runner, "find_unrecorded", None), getattr(runner, "adopt", None)
    if find is None or adopt is None:
        return None
    try:
        found: Unrecorded | None = find(run.id, run.attempt)
        handle = adopt(found.ident, path, run_id=run.id) if found is not None else None
    except Exception as exc:  # the engine cannot be asked now: neither adopt nor crash the run yet
        log.warning("%s: cannot look for a job started but never recorded now: %s", label(run), exc)
        return False
    if found is None or handle is None:
        return None
    rendered = render(run) if render is not None else None
    taken = store.take_over(run.id, from_worker=run.worker, attempt=run.attempt, worker=worker,
                            lease_until=now + timedelta(seconds=lease_seconds), runner_ident=found.ident,
                            start_time=found.started, job=rendered.job if rendered else None,
                            variables_patch=rendered.variables_patch if rendered else None,
                            reason=f"adopted by {worker} ({cause}); its job {found.ident[:19]} "
                                   "started before it was recorded")
    if taken is None:
        handle.detach()
        return False
    log.info("%s: adopted its job %s, started but never recorded", label(run), found.ident[:19])
    grace = found.grace if found.grace is not None else grace_seconds({})
    return Supervised(taken, handle, taken.start_time or now, grace, path)
