"""API-managed resources: deployments and queues created over HTTP, not from files.

For teams that trigger from other systems. A document sent to the API goes
through the very checks a spec file does (``specs.validate``: the kind's
JSON Schema, references to pools and queues, cron, zones, durations,
parameters, a trial render), against the pools and queues in the store
instead of a spec tree. Valid ones are stored with ``manager="api"``: never
pruned by ``apply --prune``, shown as such by ``plan``, printed as YAML by
``orchestra export`` (``reconcile.export``), and taken over by specs when a
spec file declares the same name. A spec-managed resource is never changed
here (``Conflict``: change it in git). Every write bumps the store's
resource marker, so the daemon's scheduler picks up new deployments and
schedules on its next tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import Conflict, FieldError, InvalidInput, NotFound, PathPart, format_path
from orchestra.scheduling import Schedule, parse_schedule
from orchestra.specs.loader import Document
from orchestra.specs.model import API_VERSION, Resource, content_hash, to_resource
from orchestra.specs.parameters import deployment_parameter_schema
from orchestra.specs.schema import schema_errors
from orchestra.specs.validate import resource_field_errors
from orchestra.store import ResourceWrite, Store, StoredResource

MANAGER_API = "api"
MANAGEABLE = ("WorkQueue", "Deployment")
API_SOURCE = "<api>"  # the "file" of a document sent to the API, for the validation pipeline


class InvalidDocument(InvalidInput):
    """A document (or schedule) sent to the API is invalid; each error's path is
    relative to what was sent, so the API can name the body field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(errors, what="field")


@dataclass(frozen=True)
class FoundSchedule:
    index: int
    schedule: Schedule


# -- documents --------------------------------------------------------------------------


def validated_resource(store: Store, kind: str, body: dict[str, Any], *, root: Path) -> Resource:
    """``body`` (``{metadata, spec}``, apiVersion and kind optional) as a valid ``kind`` resource."""
    document = {"apiVersion": API_VERSION, "kind": kind, **body}
    if document["kind"] != kind:
        raise InvalidDocument([FieldError(("kind",), f"expected {kind!r} at this address, got {document['kind']!r}")])
    errors = schema_errors(kind, document)
    if errors:
        raise InvalidDocument(errors)
    known = _stored_references(store)
    resource = to_resource(Document(API_SOURCE, 0, document))
    resource, errors = _with_parameter_schema(resource, known, root)
    everything = [r for r in known if (r.kind, r.name) != (kind, resource.name)] + [resource]
    errors += resource_field_errors(resource, everything)
    if errors:
        raise InvalidDocument(errors)
    return resource


def create_resource(store: Store, kind: str, body: dict[str, Any], *, root: Path) -> StoredResource:
    """Store a new API-managed resource; ``Conflict`` if the name is taken."""
    _check_manageable(kind)
    resource = validated_resource(store, kind, body, root=root)
    return store.put_api_resource(_write(resource), replace=False, schedules=_identities(resource))


def replace_resource(store: Store, kind: str, name: str, body: dict[str, Any], *, root: Path) -> StoredResource:
    """Replace the metadata and spec of an API-managed resource (runtime pause state stays)."""
    _check_manageable(kind)
    current = _api_managed(store, kind, name)
    sent_name = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
    if sent_name is not None and sent_name != name:
        raise InvalidDocument([FieldError(("metadata", "name"), f"is {sent_name!r} but the address names {name!r}; "
                                          "a resource cannot be renamed")])
    resource = validated_resource(store, kind, body, root=root)
    if kind == "WorkQueue":
        _check_queue_users(store, name, new_pool=resource.spec["pool"], current=current)
    return store.put_api_resource(_write(resource), replace=True, schedules=_identities(resource))


def delete_resource(store: Store, kind: str, name: str) -> StoredResource:
    """Delete an API-managed resource; a queue that deployments use is refused."""
    _check_manageable(kind)
    current = _api_managed(store, kind, name)
    if kind == "WorkQueue":
        _check_queue_users(store, name, new_pool=None, current=current)
    return store.delete_api_resource(kind, name)


# -- schedules of API-managed deployments ---------------------------------------------------


def add_schedule(store: Store, deployment: str, schedule: dict[str, Any], *, root: Path) -> StoredResource:
    """Append one schedule (the shape of an item of ``spec.schedules``)."""
    current = _api_managed(store, "Deployment", deployment)
    schedules = [*(current.spec.get("schedules") or []), schedule]
    body = {"metadata": current.metadata, "spec": {**current.spec, "schedules": schedules}}
    try:
        resource = validated_resource(store, "Deployment", body, root=root)
    except InvalidDocument as exc:
        raise InvalidDocument(_relative_to(exc.errors, ("spec", "schedules", len(schedules) - 1))) from None
    return store.put_api_resource(_write(resource), replace=True, schedules=_identities(resource))


def remove_schedule(store: Store, deployment: str, key: str) -> StoredResource:
    """Remove one schedule, named by its ``name``, its index or its identity."""
    current = _api_managed(store, "Deployment", deployment)
    found = find_schedule(current, key)
    schedules = [s for i, s in enumerate(current.spec.get("schedules") or []) if i != found.index]
    spec = {k: v for k, v in current.spec.items() if k != "schedules"}
    if schedules:
        spec["schedules"] = schedules
    write = ResourceWrite(kind=current.kind, name=current.name, metadata=current.metadata, spec=spec,
                          source_file=None, source_line=None, content_hash=content_hash(current.metadata, spec),
                          manager=MANAGER_API)
    keep = [parse_schedule(raw).identity for raw in schedules]
    return store.put_api_resource(write, replace=True, schedules=keep)


def find_schedule(deployment: StoredResource, key: str) -> FoundSchedule:
    """A deployment's schedule by its ``name``, else its index, else its identity."""
    parsed = [parse_schedule(raw) for raw in deployment.spec.get("schedules") or []]
    for index, schedule in enumerate(parsed):
        if schedule.name is not None and schedule.name == key:
            return FoundSchedule(index, schedule)
    if key.isascii() and key.isdigit() and int(key) < len(parsed):
        return FoundSchedule(int(key), parsed[int(key)])
    for index, schedule in enumerate(parsed):
        if schedule.identity == key:
            return FoundSchedule(index, schedule)
    names = ", ".join(s.name or str(i) for i, s in enumerate(parsed)) or "none"
    raise NotFound(f"Deployment/{deployment.name} has no schedule {key!r} (its schedules: {names})")


# -- helpers ------------------------------------------------------------------------------


def _check_manageable(kind: str) -> None:
    if kind not in MANAGEABLE:
        raise ValueError(f"{kind} cannot be managed through the API")


def _api_managed(store: Store, kind: str, name: str) -> StoredResource:
    current = store.get_resource(kind, name)
    if current.manager != MANAGER_API:
        where = f"{current.source_file}:{current.source_line}" if current.source_file else "the spec files"
        raise Conflict(f"{kind}/{name} is managed by {where}; change it in git")
    return current


def _stored_references(store: Store) -> list[Resource]:
    """Stored pools and queues as resources, for the reference checks."""
    stored = store.list_resources("WorkPool") + store.list_resources("WorkQueue")
    return [to_resource(Document(s.source_file or API_SOURCE, 0, _as_document(s))) for s in stored]


def _as_document(stored: StoredResource) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": stored.kind, "metadata": stored.metadata, "spec": stored.spec}


def _with_parameter_schema(resource: Resource, known: list[Resource], root: Path) -> tuple[Resource, list[FieldError]]:
    """An entrypoint deployment gets its function's parameter schema, as from a spec file."""
    spec = resource.spec
    pool = next((r for r in known if r.kind == "WorkPool" and r.name == spec.get("pool")), None)
    if resource.kind != "Deployment" or "entrypoint" not in spec or "parameterSchema" in spec or pool is None:
        return resource, []
    try:
        schema = deployment_parameter_schema(spec, pool.spec["type"], root)
    except FieldError as error:
        return resource, [error]
    if schema is None:
        return resource, []
    document = {**resource.as_document(), "spec": {**spec, "parameterSchema": schema}}
    return to_resource(Document(API_SOURCE, 0, document)), []


def _check_queue_users(store: Store, queue: str, *, new_pool: str | None, current: StoredResource) -> None:
    """A queue in use cannot go away or move to another pool under its deployments."""
    if new_pool == current.spec.get("pool"):
        return
    users = sorted(d.name for d in store.list_resources("Deployment") if d.spec.get("queue") == queue)
    if users:
        change = "deleted" if new_pool is None else f"moved to pool {new_pool!r}"
        raise Conflict(f"WorkQueue/{queue} is used by " + ", ".join(f"Deployment/{u}" for u in users)
                       + f"; it cannot be {change} while they use it")


def _identities(resource: Resource) -> list[str] | None:
    if resource.kind != "Deployment":
        return None
    return [parse_schedule(raw).identity for raw in resource.spec.get("schedules") or []]


def _write(resource: Resource) -> ResourceWrite:
    return ResourceWrite(kind=resource.kind, name=resource.name, metadata=resource.metadata, spec=resource.spec,
                         source_file=None, source_line=None, content_hash=resource.content_hash,
                         manager=MANAGER_API)


def _relative_to(errors: Sequence[FieldError], prefix: tuple[PathPart, ...]) -> list[FieldError]:
    """Errors of one part of a document relative to that part; others keep their place in words."""
    relative = []
    for error in errors:
        if error.path[: len(prefix)] == prefix:
            relative.append(FieldError(error.path[len(prefix):], error.message))
        else:
            relative.append(FieldError((), f"{format_path(error.path)}: {error.message}"))
    return relative
