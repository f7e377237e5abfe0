"""Routes for pools, queues and deployments, their pause switch and the plan.

Thin handlers: read the store, shape with ``api.views``, and for pause and
resume call ``reconcile.operations.set_paused``, the same service as
``orchestra pause``. ``GET /plan`` runs ``reconcile.apply.plan_specs``
over the daemon's spec paths against the store, as ``orchestra plan``
would, and never writes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import StringConstraints

from orchestra.api.errors import INVALID, NOT_FOUND
from orchestra.api.schemas import PlanOut, ResourceOut, UpcomingOut
from orchestra.api.settings import ApiSettings
from orchestra.api.shapes import pool_of
from orchestra.api.views import label_selector, matches, resource_view, upcoming
from orchestra.diagnostics import SpecError
from orchestra.errors import NotFound
from orchestra.reconcile.apply import plan_specs
from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.reconcile.operations import set_paused
from orchestra.store import Store

# URL noun -> (kind, the noun ``operations.set_paused`` takes)
KINDS = {"pools": ("WorkPool", "pool"), "queues": ("WorkQueue", "queue"), "deployments": ("Deployment", "deployment")}
Label = Annotated[str, StringConstraints(pattern="^[^=]+=")]
Labels = Annotated[list[Label], Query(description="KEY=VALUE; repeat to require several labels.")]


def resources_router(store: Store, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for noun, (kind, singular) in KINDS.items():
        _add_kind_routes(router, store, settings, noun, kind, singular)
    _add_deployment_routes(router, store, settings)
    return router


def spec_errors(store: Store) -> list[dict[str, Any]]:
    """The daemon's last check of its spec tree: the errors keeping the last good state."""
    status = store.get_status(SPEC_STATUS)
    return list(status.get("errors") or []) if isinstance(status, dict) else []


def paused_schedules(store: Store, kind: str) -> set[tuple[str, str]]:
    """(deployment, schedule identity) of the schedules paused at runtime; none for other kinds."""
    return store.paused_schedules() if kind == "Deployment" else set()


def _add_kind_routes(router: APIRouter, store: Store, settings: ApiSettings, noun: str, kind: str,
                     singular: str) -> None:
    def view(resource: Any) -> dict[str, Any]:
        return resource_view(resource, spec_errors(store), settings.clock(), paused_schedules(store, kind),
                             pool_of(store, resource))

    @router.get(f"/{noun}", response_model=list[ResourceOut], responses=INVALID, tags=[noun],
                summary=f"List {noun} with their status", operation_id=f"list_{noun}")
    def list_resources(label: Labels = [],  # noqa: B006 - FastAPI copies defaults per request
                       pool: Annotated[str | None, Query(description="Only those of this pool.")] = None,
                       name: Annotated[str | None, Query(description="Only names containing this.")] = None,
                       ) -> list[dict[str, Any]]:
        selector = label_selector(label)
        errors, now, paused = spec_errors(store), settings.clock(), paused_schedules(store, kind)
        pools = {p.name: p for p in store.list_resources("WorkPool")} if kind == "Deployment" else {}
        return [resource_view(r, errors, now, paused, pools.get(r.spec.get("pool")))
                for r in store.list_resources(kind)
                if matches(r, labels=selector, pool=pool, name=name)]

    @router.get(f"/{noun}/{{name}}", response_model=ResourceOut, responses=NOT_FOUND, tags=[noun],
                summary=f"One {singular} with its status", operation_id=f"get_{singular}")
    def get_resource(name: str) -> dict[str, Any]:
        return view(store.get_resource(kind, name))

    @router.post(f"/{noun}/{{name}}/pause", response_model=ResourceOut, responses=NOT_FOUND, tags=[noun],
                 summary=f"Pause a {singular} (runtime state; apply leaves it alone)",
                 operation_id=f"pause_{singular}")
    def pause(name: str) -> dict[str, Any]:
        return view(set_paused(store, singular, name, True))

    @router.post(f"/{noun}/{{name}}/resume", response_model=ResourceOut, responses=NOT_FOUND, tags=[noun],
                 summary=f"Resume a {singular}", operation_id=f"resume_{singular}")
    def resume(name: str) -> dict[str, Any]:
        return view(set_paused(store, singular, name, False))


def _add_deployment_routes(router: APIRouter, store: Store, settings: ApiSettings) -> None:
    @router.get("/deployments/{name}/upcoming", response_model=UpcomingOut, responses={**NOT_FOUND, **INVALID},
                tags=["deployments"], summary="The next run times of a deployment's active, unpaused schedules")
    def upcoming_runs(name: str, count: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
        deployment = store.get_resource("Deployment", name)
        paused = {identity for _, identity in store.paused_schedules([name])}
        return {"deployment": deployment.name, "paused": deployment.paused,
                "runs": upcoming(deployment.spec, settings.clock(), count, paused)}

    @router.get("/plan", response_model=PlanOut, responses=NOT_FOUND, tags=["plan"],
                summary="The daemon's spec directory planned against the store (read only)")
    def plan() -> dict[str, Any]:
        if not settings.spec_paths:
            raise NotFound("this server watches no spec directory")
        try:
            result = plan_specs(store, list(settings.spec_paths), prune=settings.prune, now=settings.clock())
        except SpecError as exc:
            return {"valid": False, "errors": [d.to_json() for d in exc.diagnostics]}
        return {"valid": True, **result.plan.to_json()}
