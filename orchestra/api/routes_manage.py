"""Routes that create and change API-managed resources, export them, and pause schedules.

Thin handlers over ``reconcile.managed`` (create, replace and delete
deployments and queues; add and remove schedules), ``reconcile.export``
(``GET /export``) and ``reconcile.operations.set_schedule_paused`` (the
same service as ``orchestra pause schedule``). A document is validated
exactly as a spec file is; its errors are a 422 naming each body field
(``["body", "spec", "schedules", 0, "cron"]``), the shape FastAPI uses for
its own. A spec-managed resource is refused with 409: it changes in git.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from orchestra.api.errors import BAD_BODY, CONFLICT, INVALID, NOT_FOUND, field_problem
from orchestra.api.routes_resources import paused_schedules, spec_errors
from orchestra.api.schemas import ExportDocument, ResourceDocumentIn, ResourceOut, ScheduleIn, SchedulePauseOut
from orchestra.api.settings import ApiSettings
from orchestra.api.shapes import pool_of
from orchestra.api.views import resource_view
from orchestra.reconcile.export import export_documents, to_yaml
from orchestra.reconcile.managed import (
    InvalidDocument,
    add_schedule,
    create_resource,
    delete_resource,
    remove_schedule,
    replace_resource,
)
from orchestra.reconcile.operations import set_schedule_paused
from orchestra.specs.validate import spec_root
from orchestra.store import Store, StoredResource

# URL noun -> kind, for the kinds the API may manage
MANAGED = {"queues": "WorkQueue", "deployments": "Deployment"}
YAML_TYPE = "application/yaml"
KindName = Literal["WorkPool", "WorkQueue", "Deployment"]
EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The API-managed resources as spec documents: a JSON list, or multi-document YAML "
                         "with ?format=yaml.",
          "content": {YAML_TYPE: {}}},  # multi-document text: no JSON Schema describes it
    **NOT_FOUND,
}


def manage_router(store: Store, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    root = spec_root(list(settings.spec_paths)) if settings.spec_paths else Path.cwd()

    def view(resource: StoredResource) -> dict[str, Any]:
        return resource_view(resource, spec_errors(store), settings.clock(), paused_schedules(store, resource.kind),
                             pool_of(store, resource))

    for noun, kind in MANAGED.items():
        _add_document_routes(router, store, view, root, noun, kind)
    _add_schedule_routes(router, store, view, root)
    _add_export_route(router, store)
    return router


@contextmanager
def body_errors(prefix: tuple[str | int, ...] = ("body",)) -> Iterator[None]:
    """An invalid document becomes a 422 naming each field, like FastAPI's own validation."""
    try:
        yield
    except InvalidDocument as exc:
        problems = [field_problem([*prefix, *e.path], e.message, "invalid_spec") for e in exc.errors]
        raise RequestValidationError(problems) from None


def _add_document_routes(router: APIRouter, store: Store, view: Any, root: Path, noun: str, kind: str) -> None:
    singular = noun.removesuffix("s")
    refused = {**BAD_BODY, **NOT_FOUND, **CONFLICT, **INVALID}

    @router.post(f"/{noun}", response_model=ResourceOut, status_code=201,
                 responses={**BAD_BODY, **CONFLICT, **INVALID},
                 tags=[noun], summary=f"Create an API-managed {singular} (validated as a spec file is)",
                 operation_id=f"create_{singular}")
    def create(document: ResourceDocumentIn) -> dict[str, Any]:
        with body_errors():
            return view(create_resource(store, kind, _plain(document), root=root))

    @router.put(f"/{noun}/{{name}}", response_model=ResourceOut, responses=refused, tags=[noun],
                summary=f"Replace an API-managed {singular} (409 for a spec-managed one)",
                operation_id=f"replace_{singular}")
    def replace(name: str, document: ResourceDocumentIn) -> dict[str, Any]:
        with body_errors():
            return view(replace_resource(store, kind, name, _plain(document), root=root))

    @router.delete(f"/{noun}/{{name}}", status_code=204, responses={**NOT_FOUND, **CONFLICT}, tags=[noun],
                   summary=f"Delete an API-managed {singular} (409 for a spec-managed one)",
                   operation_id=f"delete_{singular}")
    def delete(name: str) -> Response:
        delete_resource(store, kind, name)
        return Response(status_code=204)


def _add_schedule_routes(router: APIRouter, store: Store, view: Any, root: Path) -> None:
    refused = {**BAD_BODY, **NOT_FOUND, **CONFLICT, **INVALID}

    @router.post("/deployments/{name}/schedules", response_model=ResourceOut, status_code=201, responses=refused,
                 tags=["deployments"], summary="Add a schedule to an API-managed deployment")
    def add(name: str, schedule: ScheduleIn) -> dict[str, Any]:
        with body_errors():
            return view(add_schedule(store, name, schedule.model_dump(exclude_unset=True), root=root))

    @router.delete("/deployments/{name}/schedules/{schedule}", response_model=ResourceOut,
                   responses={**NOT_FOUND, **CONFLICT}, tags=["deployments"],
                   summary="Remove a schedule (by its name or index) from an API-managed deployment")
    def remove(name: str, schedule: str) -> dict[str, Any]:
        return view(remove_schedule(store, name, schedule))

    for verb, paused in (("pause", True), ("resume", False)):
        _add_schedule_pause_route(router, store, verb, paused)


def _add_schedule_pause_route(router: APIRouter, store: Store, verb: str, paused: bool) -> None:
    @router.post(f"/deployments/{{name}}/schedules/{{schedule}}/{verb}", response_model=SchedulePauseOut,
                 responses=NOT_FOUND, tags=["deployments"], operation_id=f"{verb}_schedule",
                 summary=f"{verb.capitalize()} one schedule (by its name or index); runtime state like a "
                         "deployment's pause")
    def pause_or_resume(name: str, schedule: str) -> dict[str, Any]:
        state = set_schedule_paused(store, name, schedule, paused)
        return {"deployment": state.deployment, "schedule": state.schedule, "index": state.index,
                "paused": state.paused}


def _add_export_route(router: APIRouter, store: Store) -> None:
    @router.get("/export", response_model=list[ExportDocument], responses=EXPORT_RESPONSES, tags=["export"],
                summary="API-managed resources as spec documents, ready to move into git")
    def export(kind: KindName | None = None,
               name: Annotated[str | None, Query(description="Only the resource of this name.")] = None,
               fmt: Annotated[Literal["json", "yaml"], Query(alias="format", description="json (a list) or yaml.")]
               = "json",
               ) -> Any:
        documents = export_documents(store, kind, name)
        if fmt == "yaml":
            return Response(to_yaml(documents), media_type=YAML_TYPE)
        return documents


def _plain(document: ResourceDocumentIn) -> dict[str, Any]:
    """The body as sent (camelCase keys, nothing added), for the spec validation."""
    return document.model_dump(by_alias=True, exclude_unset=True)
