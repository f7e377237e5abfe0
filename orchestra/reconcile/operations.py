"""What a person (or another system) does to runs and resources at runtime.

Start a run, cancel one, pause and resume. The CLI calls these against the
store and the HTTP API will call the very same functions, so both check
parameters the same way and record the same reasons. The daemon notices the
changes through the store; nothing here talks to it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestra.durations import parse_delay, parse_duration
from orchestra.errors import Conflict, NotFound
from orchestra.reconcile.jobs import prepare_job
from orchestra.reconcile.managed import find_schedule
from orchestra.store import CANCELLED, CANCELLING, SCHEDULED, TERMINAL, NewRun, Run, Store, StoredResource

KIND_BY_NOUN = {"deployment": "Deployment", "pool": "WorkPool", "queue": "WorkQueue", "schedule": "Schedule"}


@dataclass(frozen=True)
class SchedulePause:
    """The pause state of one schedule; ``name`` is ``DEPLOYMENT/SCHEDULE``."""

    deployment: str
    schedule: str  # its identity: the name, else the canonical timing
    index: int
    paused: bool
    kind: str = "Schedule"

    @property
    def name(self) -> str:
        return f"{self.deployment}/{self.schedule}"


def run_policy(spec: dict[str, Any]) -> dict[str, Any]:
    """Attempts, retry delay and timeout of a deployment, as the run records them."""
    retries = spec.get("retries") or {}
    delay, timeout = retries.get("delay"), spec.get("timeout")
    return {
        "max_attempts": int(retries.get("count", 0)) + 1,
        "retry_delay_seconds": parse_delay(delay).total_seconds() if delay is not None else 0.0,
        "timeout_seconds": parse_duration(timeout).total_seconds() if timeout is not None else None,
    }


def create_manual_run(store: Store, deployment: str, *, parameters: dict[str, Any], job_variables: dict[str, Any],
                      now: datetime, trigger: str = "manual") -> Run:
    """A run due now; parameters and job variables are checked (a trial render) first."""
    prepared = prepare_job(store, deployment, parameters=parameters, job_variables=job_variables)
    spec = prepared.deployment.spec
    return store.create_run(NewRun(
        deployment=deployment, pool=spec["pool"], queue=spec.get("queue") or "default",
        scheduled_time=now, trigger=trigger, parameters=prepared.parameters, job_variables=job_variables,
        state_reason=f"started by {trigger} request", **run_policy(spec),
    ))


def cancel_run(store: Store, run_id: str) -> Run:
    """Scheduled runs are cancelled at once; active ones are asked to stop (the worker does it)."""
    run = store.get_run(run_id)
    if run.state in TERMINAL:
        raise Conflict(f"run {run.id} is already {run.state}")
    if run.state == CANCELLING:
        return run
    target = CANCELLED if run.state == SCHEDULED else CANCELLING
    return store.transition(run.id, target, "cancel requested", expect={run.state})


def set_paused(store: Store, noun: str, name: str, paused: bool) -> StoredResource | SchedulePause:
    """Pause is runtime state: it overrides the spec until resumed; apply leaves it alone.

    ``noun`` ``schedule`` takes ``DEPLOYMENT/SCHEDULE`` (the schedule's name or index).
    """
    if noun == "schedule":
        deployment, _, schedule = name.partition("/")
        return set_schedule_paused(store, deployment, schedule, paused)
    kind = KIND_BY_NOUN[noun]
    resource = store.get_resource(kind, name)
    spec_paused = bool(resource.spec.get("paused", False))
    override = paused if paused != spec_paused else None
    return store.set_paused_override(kind, name, override)


def set_schedule_paused(store: Store, deployment: str, schedule: str, paused: bool) -> SchedulePause:
    """Pause or resume one schedule (by name, index or identity) of a deployment.

    While paused, the scheduler records its slots Skipped ("schedule paused"),
    as it does for a paused deployment; the deployment's other schedules run.
    """
    if not schedule:
        raise NotFound(f"name a schedule as DEPLOYMENT/SCHEDULE (its name or index), got {deployment!r}")
    found = find_schedule(store.get_resource("Deployment", deployment), schedule)
    store.set_schedule_paused(deployment, found.schedule.identity, paused)
    return SchedulePause(deployment, found.schedule.identity, found.index, paused)


def paused_schedules(store: Store, deployment: str) -> set[str]:
    """Identities of the paused schedules of one deployment."""
    return {identity for name, identity in store.paused_schedules([deployment]) if name == deployment}
