"""The stable JSON shapes of runs, run events and resources.

One definition for every edge that prints them: ``orchestra get -o json``
(``cli.get_cmds``, ``cli.run_cmds``) and the HTTP API (``api.routes_*``),
so a script reading either sees the same fields. Plain functions of store
values; no FastAPI here, so the CLI can import this module without loading
the web stack (``orchestra/api/__init__.py`` stays empty for that reason).
The pydantic models in ``api.schemas`` describe these shapes for OpenAPI.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from orchestra.store import Run, RunEvent, StoredResource


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_json(run: Run) -> dict[str, Any]:
    """A run as ``get runs -o json`` and ``GET /api/v1/runs`` list it."""
    return {
        "id": run.id, "deployment": run.deployment, "pool": run.pool, "queue": run.queue,
        "state": run.state, "stateReason": run.state_reason, "trigger": run.trigger,
        "scheduledTime": iso(run.scheduled_time), "slotTime": iso(run.slot_time),
        "startTime": iso(run.start_time), "endTime": iso(run.end_time),
        "attempt": run.attempt, "maxAttempts": run.max_attempts, "exitCode": run.exit_code,
        "parameters": run.parameters, "jobVariables": run.job_variables, "worker": run.worker,
    }


def event_json(event: RunEvent) -> dict[str, Any]:
    """One state change of a run, as listed in the run's details."""
    return {"time": event.time.isoformat(), "from": event.from_state, "to": event.to_state,
            "reason": event.reason, "attempt": event.attempt}


def run_detail_json(run: Run, events: Iterable[RunEvent]) -> dict[str, Any]:
    """One run with its rendered job, the variables patch and its events."""
    return {**run_json(run), "job": run.job, "variablesPatch": run.variables_patch,
            "events": [event_json(e) for e in events]}


def source_text(resource: StoredResource) -> str | None:
    return f"{resource.source_file}:{resource.source_line}" if resource.source_file else None


def resource_json(resource: StoredResource) -> dict[str, Any]:
    """A pool, queue or deployment as ``get ... -o json`` prints it."""
    data: dict[str, Any] = {"kind": resource.kind, "name": resource.name}
    if resource.kind == "Deployment":
        data.update(pool=resource.spec["pool"], queue=resource.spec.get("queue") or "default")
    data.update(
        paused=resource.paused,
        labels=resource.metadata.get("labels") or {},
        source=source_text(resource),
        manager=resource.manager,
        generation=resource.generation,
        spec=resource.spec,
    )
    return data
