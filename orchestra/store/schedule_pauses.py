"""Per-schedule pause: runtime state, like a deployment's pause override.

One row per paused schedule, keyed by the deployment and the schedule's
identity (its ``name``, else its canonical timing: the identity its runs'
idempotency keys carry), so pausing survives edits of its parameters and
follows the schedule the scheduler knows. Resuming deletes the row. Every
change bumps the resources revision in the same transaction, so the
daemon's scheduler (which compares ``resource_marker``) re-reads at once.
``apply`` never touches this table except to drop the rows of a deployment
it deletes (``resources.apply_resources``), so a later deployment of the
same name starts unpaused.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, select

from orchestra.store.resources import bump_revision
from orchestra.store.tables import paused_schedules

_P = paused_schedules.c


def set_schedule_paused(conn: Connection, deployment: str, identity: str, paused: bool, now: datetime) -> bool:
    """Pause or resume one schedule; returns whether anything changed."""
    key = (_P.deployment == deployment) & (_P.schedule == identity)
    exists = conn.scalar(select(_P.deployment).where(key)) is not None
    if paused == exists:
        return False
    if paused:
        conn.execute(paused_schedules.insert().values(deployment=deployment, schedule=identity, paused_at=now))
    else:
        conn.execute(paused_schedules.delete().where(key))
    bump_revision(conn)
    return True


def paused_schedules_of(conn: Connection, deployments: Collection[str] | None = None) -> set[tuple[str, str]]:
    """(deployment, schedule identity) of every paused schedule, or of the named deployments'."""
    query = select(_P.deployment, _P.schedule)
    if deployments is not None:
        query = query.where(_P.deployment.in_(sorted(set(deployments))))
    return {(row.deployment, row.schedule) for row in conn.execute(query)}

