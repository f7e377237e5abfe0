"""Since when each schedule has been in its deployment's spec without a break.

A schedule owes the slots after its last stored slot (``reconcile.scheduler``),
so that a daemon's downtime is accounted for. But a schedule that left the
spec (removed, changed to another timing, made ``active: false``, its
deployment deleted) owed nothing while it was gone: brought back, it must not
owe every slot since its last run (with ``missedRuns: all``, a week of hourly
runs at once; with ``latest``, a week of runs recorded Missed). So every
write of a deployment's spec keeps, per schedule identity, when the schedule
came (back) into it, and the scheduler owes slots from the later of that and
the last slot. An edit that keeps a schedule (its parameters, the command)
leaves its row alone. ``since`` is NULL for the schedules stored before this
was kept (the migration that made the table): for them the last slot alone
counts, as it did then.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from orchestra.scheduling import active_schedules
from orchestra.store.tables import resources, schedule_spans

_S = schedule_spans.c
_CHUNK = 500  # names per IN list: well under any database's limit on bound values


def track(conn: Connection, written: Mapping[str, Mapping[str, Any]], deleted: Collection[str], now: datetime) -> None:
    """Deployments whose spec was just written (name -> spec) or deleted: their schedules' rows
    made to match, a schedule new to its deployment ``since`` now."""
    if deleted:
        for chunk in _chunks(sorted(deleted)):
            conn.execute(schedule_spans.delete().where(_S.deployment.in_(chunk)))
    if not written:
        return
    kept = _stored(conn, written)
    wanted = {(name, schedule.identity) for name, spec in written.items() for schedule in active_schedules(spec)}
    gone = kept - wanted
    if gone:
        for deployment, identity in sorted(gone):
            conn.execute(schedule_spans.delete().where(_S.deployment == deployment, _S.schedule == identity))
    new = sorted(wanted - kept)
    if new:
        conn.execute(schedule_spans.insert(), [{"deployment": d, "schedule": i, "since": now} for d, i in new])


def spans(conn: Connection) -> dict[tuple[str, str], datetime | None]:
    """(deployment, schedule identity) -> since when the schedule has been in the spec (None:
    from before this was kept)."""
    return {(row.deployment, row.schedule): row.since for row in conn.execute(select(schedule_spans))}


def backfill(conn: Connection) -> None:
    """The rows of every stored deployment's schedules, ``since`` unknown (the migration)."""
    specs = {row.name: row.spec for row in conn.execute(
        select(resources.c.name, resources.c.spec).where(resources.c.kind == "Deployment"))}
    rows = [{"deployment": name, "schedule": identity, "since": None}
            for name, spec in specs.items() for identity in sorted({s.identity for s in active_schedules(spec)})]
    if rows:
        conn.execute(schedule_spans.insert(), rows)


def _stored(conn: Connection, deployments: Iterable[str]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(sorted(deployments)):
        found |= {(row.deployment, row.schedule) for row in conn.execute(
            select(_S.deployment, _S.schedule).where(_S.deployment.in_(chunk)))}
    return found


def _chunks(names: list[str]) -> Iterable[list[str]]:
    return (names[i:i + _CHUNK] for i in range(0, len(names), _CHUNK))
