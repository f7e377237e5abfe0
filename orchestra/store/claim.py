"""Dispatch: which due runs of a pool may start now, and why the others wait.

``claim_runs`` (workers) and ``explain_waiting`` ("why has my run not
started?") walk the same due runs in the same order through the same
``Dispatch`` accounting (``dispatch.py``, pure), so the explanation can never
disagree with what a worker would do. The only differences: claiming stops at ``max_count`` and
skips what cannot start; explaining lists everything and changes nothing.

Dispatch order: queue priority (lower first; the implicit ``default`` queue
last unless declared), then scheduled time, then creation. Queues of equal
priority are merged into one time-ordered stream. Pool, queue and deployment
limits count Pending, Running and Cancelling runs and must all have room.

The walk reads due runs in keyset pages through the (state, pool,
scheduled_time) index, so future runs are never loaded. While claiming,
every page excludes queues and deployments already known to be full or
paused, so a long backlog of one blocked deployment costs one page, not a
scan of the backlog.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from orchestra.store import resources as resource_queries
from orchestra.store.dispatch import DEFAULT_QUEUE, READY, Dispatch, QueueView
from orchestra.store.engine import Database
from orchestra.store.models import ACTIVE, PENDING, SCHEDULED, Run, effective_paused
from orchestra.store.runs import to_run, write_events
from orchestra.store.tables import runs

_C = runs.c


def load_dispatch(conn: Connection, pool: str) -> Dispatch:
    """The pool, its queues and the active-run counts, read in the caller's transaction."""
    pools = resource_queries.get_resources(conn, "WorkPool", [pool])
    queues = {q.name: q for q in _pool_queues(conn, pool)}
    queues.setdefault(DEFAULT_QUEUE, QueueView(DEFAULT_QUEUE, math.inf, None, False))
    counts = select(_C.pool, _C.queue, _C.deployment, func.count()).where(_C.state.in_(sorted(ACTIVE)))
    rows = conn.execute(counts.group_by(_C.pool, _C.queue, _C.deployment))
    active = Counter({(r[0], r[1], r[2]): r[3] for r in rows})
    return Dispatch(pool, pools.get(pool), queues, active)


def _pool_queues(conn: Connection, pool: str) -> Iterator[QueueView]:
    # Queues are few; filtering spec.pool in Python avoids dialect-specific JSON SQL.
    for resource in resource_queries.list_resources(conn, "WorkQueue"):
        spec = resource.spec
        if spec.get("pool") == pool:
            yield QueueView(
                name=resource.name,
                priority=spec.get("priority", 100),
                limit=spec.get("concurrencyLimit"),
                paused=effective_paused(spec, resource.paused_override),
            )


def _due_pages(
    conn: Connection, dispatch: Dispatch, now: datetime, page: int, claiming: bool
) -> Iterator[list[Run]]:
    """Due runs in dispatch order, a page at a time. While claiming, each page
    skips what ``dispatch`` already knows cannot start; when explaining, runs in
    queues unknown to the pool come last."""
    groups: list[list[str] | None] = list(dispatch.queue_groups())
    if not claiming:
        groups.append(None)  # None: every queue not in the pool
    for group in groups:
        after: Run | None = None
        while True:
            if claiming and dispatch.pool_block():
                return
            query = _due_query(dispatch, group, now, claiming)
            if query is None:
                break
            if after is not None:
                query = query.where(_after(after))
            batch = [to_run(r) for r in conn.execute(query.limit(page))]
            if batch:
                yield batch
            if len(batch) < page:
                break
            after = batch[-1]


def _due_query(dispatch: Dispatch, group: list[str] | None, now: datetime, claiming: bool) -> Any:
    query = select(runs).where(_C.state == SCHEDULED, _C.pool == dispatch.pool, _C.scheduled_time <= now)
    if group is None:
        query = query.where(_C.queue.not_in(sorted(dispatch.queues)))
    else:
        queues = [q for q in group if not (claiming and dispatch.queue_block(q))]
        if not queues:
            return None
        query = query.where(_C.queue.in_(queues))
    if claiming:
        blocked = dispatch.blocked_deployments()
        if blocked:
            query = query.where(_C.deployment.not_in(blocked))
        # Rows another transaction is changing (a cancel) are left for the next claim.
        query = query.with_for_update(skip_locked=True)
    return query.order_by(_C.scheduled_time, _C.created_at, _C.id)


def _after(run: Run) -> Any:
    """Keyset condition: strictly after ``run`` in (scheduled_time, created_at, id) order."""
    return or_(
        _C.scheduled_time > run.scheduled_time,
        and_(_C.scheduled_time == run.scheduled_time, _C.created_at > run.created_at),
        and_(_C.scheduled_time == run.scheduled_time, _C.created_at == run.created_at, _C.id > run.id),
    )


def _load_deployments(conn: Connection, dispatch: Dispatch, batch: list[Run]) -> None:
    names = dispatch.missing_deployments([run.deployment for run in batch])
    found = resource_queries.get_resources(conn, "Deployment", names)
    dispatch.deployments.update({name: found.get(name) for name in names})


def claim_runs(
    db: Database, conn: Connection, pool: str, *, now: datetime, worker: str, max_count: int,
    lease_seconds: float, event_time: datetime,
) -> list[Run]:
    """Claim up to ``max_count`` due runs of ``pool`` for ``worker`` in the caller's
    write transaction; they become Pending with a lease from ``now``.

    ``now`` decides what is due; ``event_time`` (the store clock) stamps the
    events, so a run's history stays in clock order whatever ``now`` says.
    """
    if max_count <= 0:
        return []
    db.lock(conn, f"orchestra:claim:{pool}")  # PostgreSQL: one claimer per pool at a time
    dispatch = load_dispatch(conn, pool)
    chosen: list[Run] = []
    for batch in _due_pages(conn, dispatch, now, page=max(2 * max_count, 50), claiming=True):
        _load_deployments(conn, dispatch, batch)
        for run in batch:
            if len(chosen) == max_count:
                break
            if dispatch.admit(run) is None:
                chosen.append(run)
        if len(chosen) == max_count:
            break
    return _mark_claimed(conn, chosen, worker, now + timedelta(seconds=lease_seconds), event_time)


def _mark_claimed(conn: Connection, chosen: list[Run], worker: str, lease: datetime, now: datetime) -> list[Run]:
    if not chosen:
        return []
    statement = (
        runs.update()
        .where(_C.id.in_([run.id for run in chosen]), _C.state == SCHEDULED)
        .values(state=PENDING, worker=worker, lease_expires_at=lease, state_reason=f"claimed by {worker}")
        .returning(*runs.c)
    )
    claimed = {row.id: to_run(row) for row in conn.execute(statement)}
    ordered = [claimed[run.id] for run in chosen if run.id in claimed]
    write_events(conn, [(run, SCHEDULED) for run in ordered], now)
    return ordered


def explain_waiting(conn: Connection, pool: str, now: datetime, limit: int = 1000) -> list[tuple[Run, str]]:
    """Every due, unclaimed run of ``pool`` in dispatch order with why it waits.

    A run the next claim would take is listed with ``READY``. Read-only.
    """
    if limit <= 0:
        return []
    dispatch = load_dispatch(conn, pool)
    explained: list[tuple[Run, str]] = []
    for batch in _due_pages(conn, dispatch, now, page=min(limit, 500), claiming=False):
        _load_deployments(conn, dispatch, batch)
        explained += [(run, dispatch.admit(run) or READY) for run in batch]
        if len(explained) >= limit:
            break
    return explained[:limit]
