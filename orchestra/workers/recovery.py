"""Runs left behind by a worker that is gone: find them, clean up, move them on.

``LocalWorker.recover`` (at daemon start) and its periodic orphan check call
``recover_runs``. A run is an orphan when no live worker supervises it: its
worker is a local worker of this host that is dead (``identity``), or its
lease expired (a worker anywhere stopped renewing). For each orphan:

1. what its runner left running is killed (``Runner.reap_orphan``; a job
   started but not recorded yet has no ident, and the process runner finds it
   by its run id, ``reap_unrecorded``): a process job never outlives its
   daemon, so a retry never runs next to a survivor;
2. the run moves on and is never left active: Cancelling -> Cancelled (the
   cancel is done now), else a retry when attempts remain, else Crashed.

Safe to run twice and in two daemons at once: every change is a
compare-and-set on the run's state, worker and attempt as they were when the
orphan was found; a ``Conflict`` means another daemon (or the run itself)
moved on first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from orchestra.runners.base import Runner
from orchestra.store import CANCELLED, CANCELLING, CRASHED, SCHEDULED, Run, Store
from orchestra.workers.identity import local_worker_alive
from orchestra.workers.outcomes import label
from orchestra.workers.reporting import Move, apply_moves, move_request

log = logging.getLogger("orchestra.worker")


def orphan_cause(run: Run, now: datetime) -> str | None:
    """Why no live worker supervises the active ``run`` (a reason's first words), or None."""
    if run.worker is None:
        return "no worker holds it"
    if local_worker_alive(run.worker) is False:
        return f"worker {run.worker} gone"
    if run.lease_expires_at is not None and run.lease_expires_at < now:
        return f"lease of worker {run.worker} expired"
    return None


def recover_runs(store: Store, runners: Mapping[str, Runner], runs: Iterable[Run], now: datetime) -> list[str]:
    """Recover each orphan among ``runs``; the ids of the runs this call moved on.

    What the orphans left running is killed first, one by one; then every
    orphan is moved on in one store transaction.
    """
    orphans = [(run, cause) for run in runs if (cause := orphan_cause(run, now)) is not None]
    if not orphans:
        return []
    pool_types = {p.name: p.spec.get("type") for p in store.list_resources("WorkPool")}
    moves = [recovery_move(_runners_for(runners, pool_types.get(run.pool)), run, cause, now)
             for run, cause in orphans]
    return [run.id for (run, _), moved in zip(orphans, apply_moves(store, moves), strict=True) if moved]


def recovery_move(runners: list[Runner], run: Run, cause: str, now: datetime) -> Move:
    """Kill what the orphaned attempt left running; the move that takes its run on.

    The move applies only while the run is still the attempt we were shown:
    the same state, worker and attempt, compared in the store's transaction
    (the state alone is not enough: a run recovered and claimed again by
    someone else may be Pending again, under another worker or attempt).
    """
    reaped = _reap(runners, run)
    match = {"worker": run.worker, "attempt": run.attempt}
    if run.state == CANCELLING:
        return move_request(run, CANCELLED, f"{cause} while cancelling", match=match, end_time=now)
    if run.attempt < run.max_attempts:
        reason = f"crashed: {cause}; retry {run.attempt + 1}/{run.max_attempts}"
        return move_request(run, SCHEDULED, reason, match=match, attempt=run.attempt + 1, scheduled_time=now)
    reason = f"{cause}; process killed" if reaped else cause
    return move_request(run, CRASHED, reason, match=match, end_time=now)


def _reap_unrecorded(runners: list[Runner], run: Run) -> bool:
    """A job started but not yet recorded (no ident): runners that can find such jobs
    by their run (``ProcessRunner.reap_unrecorded``) kill them."""
    killed = False
    for runner in runners:
        reap = getattr(runner, "reap_unrecorded", None)
        if reap is None:
            continue
        try:
            if reap(run.id):
                log.info("%s: killed a job started but never recorded", label(run))
                killed = True
        except Exception:
            log.exception("%s: cannot look for a job started but never recorded", label(run))
    return killed


def _runners_for(runners: Mapping[str, Runner], pool_type: str | None) -> list[Runner]:
    """The pool type's runner; every runner when the pool is gone (each refuses idents it did not make)."""
    if pool_type is None:
        return list(runners.values())
    runner = runners.get(pool_type)
    return [runner] if runner is not None else []


def _reap(runners: list[Runner], run: Run) -> bool:
    """Kill what the run's last job left; True if anything was still running."""
    if not run.runner_ident:
        return _reap_unrecorded(runners, run)
    for runner in runners:
        try:
            if runner.reap_orphan(run.runner_ident):
                log.info("%s: killed what its job (%s) left running", label(run), run.runner_ident)
                return True
        except ValueError:
            continue  # an ident another runner made
        except Exception:
            log.exception("%s: cannot reap %s", label(run), run.runner_ident)
    return False
