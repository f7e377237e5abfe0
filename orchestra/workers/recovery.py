"""Runs left behind by a worker that is gone: find them, clean up, move them on.

``LocalWorker.recover`` (at daemon start) and its periodic orphan check call
``recover_runs``. A run is an orphan when no live worker supervises it: its
worker is a local worker of this host that is dead (``identity``), or its
lease expired (a worker anywhere stopped renewing). For each orphan:

1. what its runner left running is killed (``Runner.reap_orphan``): a process
   job never outlives its daemon, so a retry never runs next to a survivor;
2. the run moves on and is never left active: Cancelling -> Cancelled (the
   cancel is done now), else a retry when attempts remain, else Crashed.

Safe to run twice and in two daemons at once: the run is re-read and checked
to be the same attempt under the same worker just before, and every change
is a compare-and-set on its state; a ``Conflict`` means another daemon won.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from orchestra.errors import NotFound
from orchestra.runners.base import Runner
from orchestra.store import CANCELLED, CANCELLING, CRASHED, SCHEDULED, Run, Store
from orchestra.workers.identity import local_worker_alive
from orchestra.workers.outcomes import label
from orchestra.workers.reporting import move

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
    """Recover each orphan among ``runs``; the ids of the runs this call moved on."""
    orphans = [(run, cause) for run in runs if (cause := orphan_cause(run, now)) is not None]
    if not orphans:
        return []
    pool_types = {p.name: p.spec.get("type") for p in store.list_resources("WorkPool")}
    recovered = []
    for run, cause in orphans:
        candidates = _runners_for(runners, pool_types.get(run.pool))
        if recover_run(store, candidates, run, cause, now):
            recovered.append(run.id)
    return recovered


def recover_run(store: Store, runners: list[Runner], run: Run, cause: str, now: datetime) -> bool:
    """Kill what ``run``'s attempt left running, then move the run on; False if
    someone else already did (or the run moved on by itself)."""
    current = _same_attempt(store, run)
    if current is None:
        return False
    reaped = _reap(runners, current)
    if current.state == CANCELLING:
        moved = move(store, current, CANCELLED, f"{cause} while cancelling", end_time=now)
    elif current.attempt < current.max_attempts:
        reason = f"crashed: {cause}; retry {current.attempt + 1}/{current.max_attempts}"
        moved = move(store, current, SCHEDULED, reason, attempt=current.attempt + 1, scheduled_time=now)
    else:
        reason = f"{cause}; process killed" if reaped else cause
        moved = move(store, current, CRASHED, reason, end_time=now)
    return moved is not None


def _same_attempt(store: Store, run: Run) -> Run | None:
    """The run as stored now, if it is still the orphaned attempt we were shown.

    The state alone is not enough: a run recovered and claimed again by
    someone else may be Pending again, under another worker or attempt.
    """
    try:
        current = store.get_run(run.id)
    except NotFound:
        return None
    same = (current.state, current.worker, current.attempt) == (run.state, run.worker, run.attempt)
    return current if same else None


def _runners_for(runners: Mapping[str, Runner], pool_type: str | None) -> list[Runner]:
    """The pool type's runner; every runner when the pool is gone (each refuses idents it did not make)."""
    if pool_type is None:
        return list(runners.values())
    runner = runners.get(pool_type)
    return [runner] if runner is not None else []


def _reap(runners: list[Runner], run: Run) -> bool:
    """Kill what the run's last job left; True if anything was still running."""
    if not run.runner_ident:
        return False
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
