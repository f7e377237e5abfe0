"""The stable JSON shapes of runs, run events and resources.

One definition for every edge that prints them: ``orchestra get -o json``
(``cli.get_cmds``, ``cli.run_cmds``) and the HTTP API (``api.routes_*``),
so a script reading either sees the same fields. Plain functions of store
values; no FastAPI here, so the CLI can import this module without loading
the web stack (``orchestra/api/__init__.py`` stays empty for that reason).
The pydantic models in ``api.schemas`` describe these shapes for OpenAPI.

Secrets never leave the server (``jobs.secrets``): a run's parameters and
job variables are shown with what its deployment's and pool's schemas mark
secret as ``***`` (``run_marks`` finds the marks of a page of runs with two
store reads), and a resource's spec with its secret defaults hidden. The
rendered job and variables patch are stored masked already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from orchestra.jobs.secrets import HIDE_ALL, SecretMarks, masked_spec, secret_paths
from orchestra.specs.validate import pool_template
from orchestra.store import Run, RunEvent, Store, StoredResource

NO_MARKS = SecretMarks()


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_json(run: Run, marks: SecretMarks = NO_MARKS) -> dict[str, Any]:
    """A run as ``get runs -o json`` and ``GET /api/v1/runs`` list it; ``marks`` from ``run_marks``."""
    parameters, job_variables = marks.run_values(run.parameters, run.job_variables)
    return {
        "id": run.id, "deployment": run.deployment, "pool": run.pool, "queue": run.queue,
        "state": run.state, "stateReason": run.state_reason, "trigger": run.trigger,
        "scheduledTime": iso(run.scheduled_time), "slotTime": iso(run.slot_time),
        "startTime": iso(run.start_time), "endTime": iso(run.end_time),
        "attempt": run.attempt, "maxAttempts": run.max_attempts, "exitCode": run.exit_code,
        "parameters": parameters, "jobVariables": job_variables, "worker": run.worker,
    }


def event_json(event: RunEvent) -> dict[str, Any]:
    """One state change of a run, as listed in the run's details."""
    return {"time": event.time.isoformat(), "from": event.from_state, "to": event.to_state,
            "reason": event.reason, "attempt": event.attempt}


def run_detail_json(run: Run, events: Iterable[RunEvent], marks: SecretMarks = NO_MARKS) -> dict[str, Any]:
    """One run with its rendered job, the variables patch and its events."""
    return {**run_json(run, marks), "job": run.job, "variablesPatch": run.variables_patch,
            "events": [event_json(e) for e in events]}


def run_marks(store: Store, runs: Iterable[Run]) -> Callable[[Run], SecretMarks]:
    """What is secret in each of ``runs``, from the deployments and pools they belong to.

    A run whose deployment or pool is gone shows none of the values that
    one would have marked: nothing says which are secret, so all are hidden.
    """
    runs = list(runs)
    deployments = store.get_resources("Deployment", {run.deployment for run in runs})
    pools = store.get_resources("WorkPool", {run.pool for run in runs})

    def marks(run: Run) -> SecretMarks:
        deployment, pool = deployments.get(run.deployment), pools.get(run.pool)
        parameters = secret_paths(deployment.spec.get("parameterSchema")) if deployment else HIDE_ALL.parameters
        variables = secret_paths(pool_template(pool.spec).get("variables")) if pool else HIDE_ALL.variables
        return SecretMarks(parameters, variables)

    return marks


def masked_runs_json(store: Store, runs: Iterable[Run]) -> list[dict[str, Any]]:
    """``run_json`` of each run, secrets hidden: what every edge that shows runs should call."""
    runs = list(runs)
    marks = run_marks(store, runs)
    return [run_json(run, marks(run)) for run in runs]


def masked_run_json(store: Store, run: Run) -> dict[str, Any]:
    return run_json(run, run_marks(store, [run])(run))


def masked_run_detail_json(store: Store, run: Run) -> dict[str, Any]:
    """``run_detail_json`` with secrets hidden and the run's events read from ``store``."""
    return run_detail_json(run, store.events(run.id), run_marks(store, [run])(run))


def shown_spec(resource: StoredResource, pool: StoredResource | None = None) -> dict[str, Any]:
    """A resource's spec with the secret values its schemas mark hidden (a deployment's
    ``jobVariables`` too when its ``pool`` is given)."""
    return masked_spec(resource.kind, resource.spec, pool.spec if pool is not None else None)


def pool_of(store: Store, resource: StoredResource) -> StoredResource | None:
    """The pool of a deployment (whose schema marks its secret job variables), or None."""
    if resource.kind != "Deployment":
        return None
    return store.get_resources("WorkPool", [resource.spec.get("pool", "")]).get(resource.spec.get("pool", ""))


def source_text(resource: StoredResource) -> str | None:
    return f"{resource.source_file}:{resource.source_line}" if resource.source_file else None


def resource_json(resource: StoredResource, pool: StoredResource | None = None) -> dict[str, Any]:
    """A pool, queue or deployment as ``get ... -o json`` prints it; a deployment's ``pool``, when
    given, says which of its ``jobVariables`` are secret (``pool_of`` finds it)."""
    data: dict[str, Any] = {"kind": resource.kind, "name": resource.name}
    if resource.kind == "Deployment":
        data.update(pool=resource.spec["pool"], queue=resource.spec.get("queue") or "default")
    data.update(
        paused=resource.paused,
        labels=resource.metadata.get("labels") or {},
        source=source_text(resource),
        manager=resource.manager,
        generation=resource.generation,
        spec=shown_spec(resource, pool),
    )
    return data
