"""Resource queries: list, get, the bulk apply, API-managed writes, the runtime pause override.

Called through ``Store``. ``apply_resources`` is the write behind
``orchestra apply`` and the daemon's reconcile pass; it must apply thousands
of documents in one transaction, so it reads the stored hashes once and then
issues one bulk statement per kind of change (insert, content update,
source-only update, delete), never a round trip per resource.
``put_api_resource`` and ``delete_api_resource`` are the writes behind the
API's resource routes: one resource, checked against its manager in the
same transaction, so a spec-managed resource is never changed through them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, select

from orchestra.errors import Conflict, NotFound
from orchestra.store import schedule_spans
from orchestra.store.direct import DirectStatement
from orchestra.store.models import MANAGERS, ResourceWrite, StoredResource
from orchestra.store.tables import paused_schedules, resources, revisions

_R = resources.c


def to_resource(row: Row[Any]) -> StoredResource:
    return StoredResource(**row._mapping)


def list_resources(conn: Connection, kind: str | None = None) -> list[StoredResource]:
    query = select(resources).order_by(_R.kind, _R.name)
    if kind is not None:
        query = query.where(_R.kind == kind)
    return [to_resource(row) for row in conn.execute(query)]


def get_resources(conn: Connection, kind: str, names: Sequence[str]) -> dict[str, StoredResource]:
    """The named resources of one kind that exist, by name."""
    if not names:
        return {}
    query = select(resources).where(_R.kind == kind, _R.name.in_(sorted(set(names))))
    return {row.name: to_resource(row) for row in conn.execute(query)}


def get_resource(conn: Connection, kind: str, name: str) -> StoredResource:
    row = conn.execute(select(resources).where(_R.kind == kind, _R.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"{kind}/{name} not found")
    return to_resource(row)


@dataclass
class _ApplyBatches:
    """What one apply writes, sorted by the statement that writes it."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    content: list[dict[str, Any]] = field(default_factory=list)
    source_only: list[dict[str, Any]] = field(default_factory=list)


def apply_resources(
    conn: Connection,
    upserts: Sequence[ResourceWrite],
    deletes: Sequence[tuple[str, str]],
    now: datetime,
) -> None:
    """Upsert and delete in the caller's transaction.

    New resources get generation 1. A changed ``content_hash`` replaces
    metadata and spec and bumps the generation; an unchanged one only
    refreshes where the resource was declared. ``paused_override`` is runtime
    state and is never touched here.
    """
    _check_writes(upserts)
    stored = _stored_hashes(conn, {w.kind for w in upserts} | {kind for kind, _ in deletes})
    batches = _sort_writes(upserts, stored, now)
    doomed = [{"b_kind": kind, "b_name": name} for kind, name in deletes if (kind, name) in stored]
    _execute_many(conn, _insert_statement, batches.inserts)
    _execute_many(conn, _content_statement, batches.content)
    _execute_many(conn, _source_statement, batches.source_only)
    _execute_many(conn, _delete_statement, doomed)
    for kind, name in deletes:
        if kind == "Deployment":
            forget_paused_schedules(conn, name)
    schedule_spans.track(conn, {p["b_name"]: p["b_spec"] for p in batches.inserts + batches.content
                                if p["b_kind"] == "Deployment"},
                         [name for kind, name in deletes if kind == "Deployment"], now)
    if batches.inserts or batches.content or batches.source_only or doomed:
        bump_revision(conn)


def bump_revision(conn: Connection) -> None:
    """Mark that resources changed (see ``revision``), in the changing transaction."""
    conn.execute(revisions.update().where(revisions.c.name == "resources").values(value=revisions.c.value + 1))


def revision(conn: Connection) -> int:
    """A number that grows with every change to resources (apply or pause override);
    equal numbers mean nothing changed in between, so a reader can skip re-reading."""
    return int(_REVISION.scalar(conn) or 0)


# Read on every pass of the daemon (and in every claim): built once, as building costs more than running it.
_REVISION = DirectStatement(select(revisions.c.value).where(revisions.c.name == "resources"))


def _check_writes(upserts: Sequence[ResourceWrite]) -> None:
    seen: set[tuple[str, str]] = set()
    for write in upserts:
        key = (write.kind, write.name)
        if key in seen:
            raise ValueError(f"{write.kind}/{write.name} appears twice in one apply")
        if write.manager not in MANAGERS:
            raise ValueError(f"manager must be one of {sorted(MANAGERS)}, got {write.manager!r}")
        seen.add(key)


def _stored_hashes(conn: Connection, kinds: set[str]) -> dict[tuple[str, str], tuple[str, Any, Any, str]]:
    """(kind, name) -> (hash, source_file, source_line, manager) of the kinds being written."""
    if not kinds:
        return {}
    query = select(_R.kind, _R.name, _R.content_hash, _R.source_file, _R.source_line, _R.manager)
    rows = conn.execute(query.where(_R.kind.in_(sorted(kinds))))
    return {(r.kind, r.name): (r.content_hash, r.source_file, r.source_line, r.manager) for r in rows}


def _sort_writes(
    upserts: Sequence[ResourceWrite],
    stored: dict[tuple[str, str], tuple[str, Any, Any, str]],
    now: datetime,
) -> _ApplyBatches:
    batches = _ApplyBatches()
    for w in upserts:
        params: dict[str, Any] = {
            "b_kind": w.kind, "b_name": w.name, "b_source_file": w.source_file,
            "b_source_line": w.source_line, "b_manager": w.manager, "b_now": now,
        }
        old = stored.get((w.kind, w.name))
        if old is None or old[0] != w.content_hash:
            params |= {"b_metadata": w.metadata, "b_spec": w.spec, "b_hash": w.content_hash}
            (batches.inserts if old is None else batches.content).append(params)
        elif old[1:] != (w.source_file, w.source_line, w.manager):
            batches.source_only.append(params)
    return batches


def _execute_many(conn: Connection, statement: Callable[[], Any], params: list[dict[str, Any]]) -> None:
    if params:
        conn.execute(statement(), params)


def _key_matches() -> Any:
    return and_(_R.kind == bindparam("b_kind"), _R.name == bindparam("b_name"))


def _insert_statement() -> Any:
    return resources.insert().values(
        kind=bindparam("b_kind"), name=bindparam("b_name"), metadata=bindparam("b_metadata"),
        spec=bindparam("b_spec"), source_file=bindparam("b_source_file"),
        source_line=bindparam("b_source_line"), content_hash=bindparam("b_hash"), generation=1,
        manager=bindparam("b_manager"), paused_override=None,
        created_at=bindparam("b_now"), updated_at=bindparam("b_now"),
    )


def _content_statement() -> Any:
    return resources.update().where(_key_matches()).values(
        metadata=bindparam("b_metadata"), spec=bindparam("b_spec"), content_hash=bindparam("b_hash"),
        generation=_R.generation + 1, source_file=bindparam("b_source_file"),
        source_line=bindparam("b_source_line"), manager=bindparam("b_manager"),
        updated_at=bindparam("b_now"),
    )


def _source_statement() -> Any:
    return resources.update().where(_key_matches()).values(
        source_file=bindparam("b_source_file"), source_line=bindparam("b_source_line"),
        manager=bindparam("b_manager"), updated_at=bindparam("b_now"),
    )


def _delete_statement() -> Any:
    return resources.delete().where(_key_matches())


MANAGER_API = "api"


def spec_managed_message(resource: StoredResource) -> str:
    where = f"{resource.source_file}:{resource.source_line}" if resource.source_file else "the spec files"
    return f"{resource.kind}/{resource.name} is managed by {where}; change it in git"


def _current(conn: Connection, kind: str, name: str) -> StoredResource | None:
    row = conn.execute(select(resources).where(_R.kind == kind, _R.name == name)).one_or_none()
    return None if row is None else to_resource(row)


def put_api_resource(conn: Connection, write: ResourceWrite, now: datetime, *, replace: bool,
                     schedules: Collection[str] | None = None) -> StoredResource:
    """Create (``replace=False``) or replace an API-managed resource.

    Creating refuses a name that exists, replacing one that is missing or
    spec-managed; both checks run in the writing transaction. ``schedules``
    (the identities a deployment keeps) drops the pauses of removed schedules.
    """
    if write.manager != MANAGER_API:
        raise ValueError("put_api_resource writes API-managed resources only")
    current = _current(conn, write.kind, write.name)
    if replace and current is None:
        raise NotFound(f"{write.kind}/{write.name} not found")
    if replace and current is not None and current.manager != MANAGER_API:
        raise Conflict(spec_managed_message(current))
    if not replace and current is not None:
        managed = "the API" if current.manager == MANAGER_API else _source_words(current)
        raise Conflict(f"{write.kind}/{write.name} already exists (managed by {managed}); "
                       "replace it with PUT or choose another name")
    apply_resources(conn, [write], [], now)
    if schedules is not None:
        forget_paused_schedules(conn, write.name, keep=schedules)
    stored = _current(conn, write.kind, write.name)
    assert stored is not None
    return stored


def delete_api_resource(conn: Connection, kind: str, name: str, now: datetime) -> StoredResource:
    """Delete an API-managed resource; a spec-managed one is refused (``Conflict``)."""
    current = _current(conn, kind, name)
    if current is None:
        raise NotFound(f"{kind}/{name} not found")
    if current.manager != MANAGER_API:
        raise Conflict(spec_managed_message(current))
    apply_resources(conn, [], [(kind, name)], now)
    return current


def _source_words(resource: StoredResource) -> str:
    return f"{resource.source_file}:{resource.source_line}" if resource.source_file else "specs"


def forget_paused_schedules(conn: Connection, deployment: str, keep: Collection[str] | None = None) -> None:
    """Drop the schedule pauses of a deleted deployment, or of its schedules not in ``keep``."""
    statement = paused_schedules.delete().where(paused_schedules.c.deployment == deployment)
    if keep is not None:
        statement = statement.where(paused_schedules.c.schedule.not_in(sorted(set(keep))))
    conn.execute(statement)


def set_paused_override(conn: Connection, kind: str, name: str, value: bool | None, now: datetime) -> StoredResource:
    statement = (
        resources.update()
        .where(_R.kind == kind, _R.name == name)
        .values(paused_override=value, updated_at=now)
        .returning(*resources.c)
    )
    row = conn.execute(statement).one_or_none()
    if row is None:
        raise NotFound(f"{kind}/{name} not found")
    bump_revision(conn)
    return to_resource(row)

