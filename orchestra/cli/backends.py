"""Where a command's state lives: the local store, or a daemon over HTTP.

Commands parse, call one ``Backend`` method and render. Both backends speak
the stable JSON shapes of ``orchestra.api.shapes`` (``resource_json``,
``run_json``, ``run_detail_json``), the ones ``-o json`` prints and the API
serves, so what a command prints does not depend on where the data came
from. ``LocalBackend`` calls the store and the services of
``orchestra.reconcile``; ``RemoteBackend`` (``cli.remote_backend``) calls
the daemon's routes, which call those same services.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from orchestra.api.shapes import (
    masked_run_detail_json,
    masked_run_json,
    masked_runs_json,
    pool_of,
    resource_json,
)
from orchestra.planning.plan import Plan
from orchestra.planning.render import render_plan
from orchestra.reconcile import presence
from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.reconcile.export import export_documents
from orchestra.reconcile.jobs import prepare_job
from orchestra.reconcile.operations import cancel_run, create_manual_run, set_paused
from orchestra.runners.logs import follow_log, read_log
from orchestra.store import TERMINAL, Store, StoredResource

KINDS = ("WorkPool", "WorkQueue", "Deployment")


@dataclass(frozen=True)
class RunQuery:
    """``get runs`` filters: newest first, at most ``limit``."""

    deployment: str | None
    states: frozenset[str]
    pool: str | None
    limit: int


@dataclass(frozen=True)
class PlanOutcome:
    """A plan as the commands print it: the documented JSON and the rendered text (rich markup)."""

    json: dict[str, Any]
    text: str

    @property
    def has_changes(self) -> bool:
        return bool(self.json.get("changes"))

    @property
    def summary(self) -> dict[str, int]:
        return dict(self.json.get("summary") or {})


def plan_outcome(plan: Plan, verb: str) -> PlanOutcome:
    return PlanOutcome(plan.to_json(), render_plan(plan, verb=verb))


class Backend(Protocol):
    """What the commands need of the state, in JSON shapes; errors are orchestra's exceptions."""

    def list_resources(self, kind: str | None = None) -> list[dict[str, Any]]: ...
    def get_resource(self, kind: str, name: str) -> dict[str, Any]: ...
    def spec_status(self) -> dict[str, Any] | None: ...
    def daemons(self) -> list[dict[str, Any]]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def list_runs(self, query: RunQuery) -> list[dict[str, Any]]: ...
    def get_run(self, run_id: str) -> dict[str, Any]: ...
    def create_run(self, deployment: str, parameters: dict[str, Any],
                   job_variables: dict[str, Any]) -> dict[str, Any]: ...
    def cancel_run(self, run_id: str) -> dict[str, Any]: ...
    def set_paused(self, noun: str, name: str, paused: bool) -> dict[str, Any]: ...
    def read_log(self, run_id: str) -> bytes: ...
    def follow_log(self, run_id: str) -> Iterator[bytes]: ...
    def plan(self, paths: list[Path], *, prune: bool) -> PlanOutcome: ...
    def apply(self, paths: list[Path], *, prune: bool) -> PlanOutcome: ...
    def render(self, deployment: str, parameters: dict[str, Any],
               job_variables: dict[str, Any]) -> dict[str, Any]: ...
    def export_documents(self, kind: str | None, name: str | None) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def paused_json(changed: Any) -> dict[str, Any]:
    """What ``pause``/``resume`` print: the resource, or a single schedule's own state
    (``operations.SchedulePause``: kind ``Schedule``, name ``DEPLOYMENT/SCHEDULE``)."""
    if isinstance(changed, StoredResource):
        return resource_json(changed)
    return {"kind": changed.kind, "name": changed.name, "paused": changed.paused}


class LocalBackend:
    """The store in this process (``--db``), and the services the daemon's API calls too."""

    def __init__(self, store: Store, log_dir: Path) -> None:
        self.store = store
        self.log_dir = log_dir

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def list_resources(self, kind: str | None = None) -> list[dict[str, Any]]:
        pools = {p.name: p for p in self.store.list_resources("WorkPool")}  # they mark secret job variables
        return [resource_json(r, pools.get(r.spec.get("pool"))) for r in self.store.list_resources(kind)]

    def get_resource(self, kind: str, name: str) -> dict[str, Any]:
        resource = self.store.get_resource(kind, name)
        return resource_json(resource, pool_of(self.store, resource))

    def spec_status(self) -> dict[str, Any] | None:
        status = self.store.get_status(SPEC_STATUS)
        return status if isinstance(status, dict) else None

    def daemons(self) -> list[dict[str, Any]]:
        return presence.daemons(self.store, self.now())

    def workers(self) -> list[dict[str, Any]]:
        return presence.workers(self.store, self.now())

    def list_runs(self, query: RunQuery) -> list[dict[str, Any]]:
        found = self.store.list_runs(deployment=query.deployment, state=set(query.states) or None, pool=query.pool,
                                     limit=query.limit)
        return masked_runs_json(self.store, found)

    def get_run(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        return masked_run_detail_json(self.store, run)

    def create_run(self, deployment: str, parameters: dict[str, Any],
                   job_variables: dict[str, Any]) -> dict[str, Any]:
        return masked_run_json(self.store, create_manual_run(self.store, deployment, parameters=parameters,
                                                             job_variables=job_variables, now=self.now()))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return masked_run_json(self.store, cancel_run(self.store, run_id))

    def set_paused(self, noun: str, name: str, paused: bool) -> dict[str, Any]:
        return paused_json(set_paused(self.store, noun, name, paused))

    def read_log(self, run_id: str) -> bytes:
        data, _ = read_log(self._log_path(run_id))
        return data

    def follow_log(self, run_id: str) -> Iterator[bytes]:
        run_id = self.store.get_run(run_id).id
        yield from follow_log(self._log_path(run_id), 0,
                              stop=lambda: self.store.get_run(run_id).state in TERMINAL)

    def plan(self, paths: list[Path], *, prune: bool) -> PlanOutcome:
        result = plan_specs(self.store, paths, prune=prune, now=self.now())
        return plan_outcome(result.plan, "would")

    def apply(self, paths: list[Path], *, prune: bool) -> PlanOutcome:
        result = plan_specs(self.store, paths, prune=prune, now=self.now())
        apply_plan(self.store, result)
        return plan_outcome(result.plan, "will")

    def render(self, deployment: str, parameters: dict[str, Any],
               job_variables: dict[str, Any]) -> dict[str, Any]:
        prepared = prepare_job(self.store, deployment, parameters=parameters, job_variables=job_variables)
        return {"deployment": prepared.deployment.name, "pool": prepared.pool.name, "job": prepared.rendered.job,
                "variablesPatch": prepared.rendered.variables_patch}

    def export_documents(self, kind: str | None, name: str | None) -> list[dict[str, Any]]:
        """API-managed resources as spec documents (``orchestra export``; ``reconcile.export.to_yaml`` prints them)."""
        return export_documents(self.store, kind, name)

    def close(self) -> None:
        self.store.close()

    def _log_path(self, run_id: str) -> Path:
        return self.log_dir / f"{self.store.get_run(run_id).id}.log"
