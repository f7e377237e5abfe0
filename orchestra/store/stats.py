"""Aggregate and paged reads for the web UI: one query per list, counted in SQL.

The UI's pages must stay fast with 10,000 deployments and 100,000 runs, so
nothing here loads a table to count or filter it in Python: resources are
filtered and paged in SQL (pool and labels read from the JSON columns), the
last run of each deployment on a page comes from one windowed query over the
(deployment, scheduled_time) index, and the overview's chart and load
figures are ``GROUP BY`` counts. Called through ``Store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from orchestra.store.models import ACTIVE, SCHEDULED, Run, StoredResource
from orchestra.store.resources import to_resource
from orchestra.store.runs import to_run
from orchestra.store.tables import resources, runs

_R = resources.c
_C = runs.c


@dataclass(frozen=True)
class ResourcePage:
    """One page of a filtered resource list and how many match in all."""

    items: list[StoredResource]
    total: int


@dataclass(frozen=True)
class HourCount:
    """Runs created in the hour starting at ``hour`` (UTC) that are now in ``state``."""

    hour: datetime
    state: str
    count: int


@dataclass(frozen=True)
class QueueLoad:
    """Runs of one queue: active (Pending, Running, Cancelling), due and waiting, due later."""

    pool: str
    queue: str
    active: int
    due: int
    later: int


def page_resources(conn: Connection, kind: str, *, name: str | None, pool: str | None,
                   labels: Mapping[str, str], offset: int, limit: int) -> ResourcePage:
    """Resources of ``kind`` by name, filtered by name part, pool and labels (all must match)."""
    conditions = [_R.kind == kind]
    if name:
        conditions.append(func.lower(_R.name).contains(name.lower(), autoescape=True))
    if pool is not None:
        conditions.append(_pool_of(kind) == pool)
    for key, value in labels.items():
        conditions.append(_R.metadata[("labels", key)].as_string() == value)
    total = conn.scalar(select(func.count()).select_from(resources).where(*conditions)) or 0
    query = select(resources).where(*conditions).order_by(_R.name).offset(offset).limit(limit)
    return ResourcePage([to_resource(row) for row in conn.execute(query)], int(total))


def _pool_of(kind: str) -> Any:
    """A pool is its own pool; queues and deployments name theirs in ``spec.pool``."""
    return _R.name if kind == "WorkPool" else _R.spec["pool"].as_string()


def latest_runs(conn: Connection, deployments: Sequence[str], now: datetime) -> dict[str, Run]:
    """Each deployment's most recent run due at or before ``now``, in one windowed query."""
    if not deployments:
        return {}
    position = func.row_number().over(partition_by=_C.deployment,
                                      order_by=(_C.scheduled_time.desc(), _C.created_at.desc())).label("position")
    ranked = (select(runs, position)
              .where(_C.deployment.in_(sorted(set(deployments))), _C.scheduled_time <= now)
              .subquery())
    query = select(*[ranked.c[column.name] for column in runs.c]).where(ranked.c.position == 1)
    return {row.deployment: to_run(row) for row in conn.execute(query)}


def runs_per_hour(conn: Connection, since: datetime) -> list[HourCount]:
    """Runs created since ``since`` by creation hour (UTC) and current state, oldest hour first."""
    hour = _hour_bucket(conn)
    query = (select(hour.label("hour"), _C.state, func.count().label("n"))
             .where(_C.created_at >= since)
             .group_by(hour, _C.state).order_by(hour))
    return [HourCount(_parse_hour(row.hour), row.state, int(row.n)) for row in conn.execute(query)]


def _hour_bucket(conn: Connection) -> Any:
    """``YYYY-MM-DD HH`` of ``created_at`` in UTC: text on SQLite (stored as fixed-width UTC
    text, so a prefix), ``to_char`` of the UTC hour on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        return func.substr(_C.created_at, 1, 13)
    utc = func.timezone("UTC", _C.created_at)
    return func.to_char(func.date_trunc("hour", utc), "YYYY-MM-DD HH24")


def _parse_hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC)


def queue_load(conn: Connection, now: datetime) -> list[QueueLoad]:
    """Active, due and later runs per (pool, queue), for queues that have any."""
    open_states = sorted(ACTIVE | {SCHEDULED})
    active = func.sum(case((_C.state.in_(sorted(ACTIVE)), 1), else_=0))
    due = func.sum(case(((_C.state == SCHEDULED) & (_C.scheduled_time <= now), 1), else_=0))
    later = func.sum(case(((_C.state == SCHEDULED) & (_C.scheduled_time > now), 1), else_=0))
    query = (select(_C.pool, _C.queue, active, due, later)
             .where(_C.state.in_(open_states))
             .group_by(_C.pool, _C.queue).order_by(_C.pool, _C.queue))
    return [QueueLoad(row[0], row[1], int(row[2] or 0), int(row[3] or 0), int(row[4] or 0))
            for row in conn.execute(query)]


def late_runs(conn: Connection, due_before: datetime, limit: int) -> list[Run]:
    """Scheduled runs that were due before ``due_before`` and have not started, oldest first."""
    query = (select(runs).where(_C.state == SCHEDULED, _C.scheduled_time < due_before)
             .order_by(_C.scheduled_time, _C.id).limit(limit))
    return [to_run(row) for row in conn.execute(query)]
