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
scan of the backlog. A claim asks for no more runs than the pool has room
for, and reads deployments as the walk meets them, so claiming the few runs
a busy pool can take costs a few rows, not a page of fifty.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select

from orchestra.store import resources as resource_queries
from orchestra.store.dispatch import DEFAULT_QUEUE, READY, Dispatch, QueueView
from orchestra.store.engine import Database
from orchestra.store.models import ACTIVE, PENDING, SCHEDULED, Run, effective_paused
from orchestra.store.runs import to_run, write_events
from orchestra.store.tables import runs

_C = runs.c
MIN_PAGE = 16  # due runs read per page at least, so runs held back cost few round trips
LOOKAHEAD = 8  # deployments read at least at once when a run needs an unknown one


def load_dispatch(conn: Connection, pool: str, active: Mapping[tuple[str, str, str], int] | None = None) -> Dispatch:
    """The pool, its queues and the active-run counts, read in the caller's transaction."""
    pools = resource_queries.get_resources(conn, "WorkPool", [pool])
    queues = {q.name: q for q in _pool_queues(conn, pool)}
    queues.setdefault(DEFAULT_QUEUE, QueueView(DEFAULT_QUEUE, math.inf, None, False))
    return Dispatch(pool, pools.get(pool), queues, _active_counts(conn) if active is None else active)


def _active_counts(conn: Connection) -> Counter[tuple[str, str, str]]:
    """(pool, queue, deployment) -> runs Pending, Running or Cancelling."""
    return Counter({(r[0], r[1], r[2]): r[3] for r in conn.execute(_ACTIVE_COUNTS)})


# Built once: a worker claims on every pass, and building costs about as much as running.
_ACTIVE_COUNTS = (
    select(_C.pool, _C.queue, _C.deployment, func.count())
    .where(_C.state.in_(sorted(ACTIVE)))
    .group_by(_C.pool, _C.queue, _C.deployment)
)


def _pool_room(dispatch: Dispatch, active: Mapping[tuple[str, str, str], int]) -> float:
    """How many more runs the pool's own limit admits (``inf`` without one)."""
    limit: int | None = dispatch.pool_resource.spec.get("concurrencyLimit") if dispatch.pool_resource else None
    if limit is None:
        return math.inf
    return max(0, limit - sum(n for (pool, _, _), n in active.items() if pool == dispatch.pool))


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
            query = _due_query(dispatch, group, now, claiming, after)
            if query is None:
                break
            batch = [to_run(r) for r in conn.execute(query[0], {**query[1], "page": page})]
            if batch:
                yield batch
            if len(batch) < page:
                break
            after = batch[-1]


def _due_query(
    dispatch: Dispatch, group: list[str] | None, now: datetime, claiming: bool, after: Run | None
) -> tuple[Any, dict[str, Any]] | None:
    """The statement for the next page and its parameters; None if the group is blocked."""
    params: dict[str, Any] = {"pool": dispatch.pool, "now": now}
    if group is None:
        params["queues"] = sorted(dispatch.queues)
    else:
        params["queues"] = [q for q in group if not (claiming and dispatch.queue_block(q))]
        if not params["queues"]:
            return None
    blocked = dispatch.blocked_deployments() if claiming else []
    if blocked:
        params["blocked"] = blocked
    if after is not None:
        params |= {"after_time": after.scheduled_time, "after_created": after.created_at, "after_id": after.id}
    return _due_statement(group is None, bool(blocked), after is not None, claiming), params


@functools.cache
def _due_statement(other_queues: bool, blocked: bool, keyset: bool, claiming: bool) -> Any:
    """Built once per shape, not per page: a worker claims on every pass, and
    building a statement costs about as much as running it."""
    queues: Any = bindparam("queues", expanding=True)
    query = select(runs).where(
        _C.state == SCHEDULED, _C.pool == bindparam("pool"), _C.scheduled_time <= bindparam("now"),
        _C.queue.not_in(queues) if other_queues else _C.queue.in_(queues),
    )
    if blocked:
        query = query.where(_C.deployment.not_in(bindparam("blocked", expanding=True)))
    if keyset:
        query = query.where(_after())
    if claiming:
        # Rows another transaction is changing (a cancel) are left for the next claim.
        query = query.with_for_update(skip_locked=True)
    return query.order_by(_C.scheduled_time, _C.created_at, _C.id).limit(bindparam("page"))


def _after() -> Any:
    """Keyset condition: strictly after the last run of the page before, in
    (scheduled_time, created_at, id) order."""
    time: Any = bindparam("after_time")
    created: Any = bindparam("after_created")
    run_id: Any = bindparam("after_id")
    return or_(
        _C.scheduled_time > time,
        and_(_C.scheduled_time == time, _C.created_at > created),
        and_(_C.scheduled_time == time, _C.created_at == created, _C.id > run_id),
    )


def _load_deployments(conn: Connection, dispatch: Dispatch, batch: list[Run]) -> None:
    names = dispatch.missing_deployments([run.deployment for run in batch])
    found = resource_queries.get_resources(conn, "Deployment", names)
    dispatch.deployments.update({name: found.get(name) for name in names})


def claim_runs(
    db: Database, conn: Connection, pool: str, *, now: datetime, worker: str, max_count: int,
    lease_seconds: float, event_time: datetime, queues: Collection[str] | None = None,
) -> list[Run]:
    """Claim up to ``max_count`` due runs of ``pool`` for ``worker`` in the caller's
    write transaction; they become Pending with a lease from ``now``.

    ``now`` decides what is due; ``event_time`` (the store clock) stamps the
    events, so a run's history stays in clock order whatever ``now`` says.
    A pool at its limit costs no read of runs: the count is capped at the
    pool's room before the walk, which then reads no more than it can use.
    With ``queues``, only runs of those queues of the pool are claimed.
    """
    if max_count <= 0:
        return []
    db.lock(conn, f"orchestra:claim:{pool}")  # PostgreSQL: one claimer per pool at a time
    active = _active_counts(conn)
    dispatch = load_dispatch(conn, pool, active)
    if queues is not None:  # a worker serving some queues only: the others are never read
        dispatch.queues = {name: view for name, view in dispatch.queues.items() if name in queues}
    wanted = int(min(max_count, _pool_room(dispatch, active)))
    if wanted == 0:
        return []
    chosen = _choose(conn, dispatch, now, wanted)
    return _mark_claimed(conn, chosen, worker, now + timedelta(seconds=lease_seconds), event_time)


def _choose(conn: Connection, dispatch: Dispatch, now: datetime, wanted: int) -> list[Run]:
    """Up to ``wanted`` due runs that may start, in dispatch order. Deployments are
    read as runs need them, a few runs ahead, not for the whole page: a claim of
    eight runs reads about eight deployments."""
    chosen: list[Run] = []
    for batch in _due_pages(conn, dispatch, now, page=max(2 * wanted, MIN_PAGE), claiming=True):
        for i, run in enumerate(batch):
            if len(chosen) == wanted:
                return chosen
            if run.deployment not in dispatch.deployments:
                _load_deployments(conn, dispatch, batch[i:i + max(wanted - len(chosen), LOOKAHEAD)])
            if dispatch.admit(run) is None:
                chosen.append(run)
        if len(chosen) == wanted:
            break
    return chosen


def _mark_claimed(conn: Connection, chosen: list[Run], worker: str, lease: datetime, now: datetime) -> list[Run]:
    """Make the chosen runs Pending under ``worker``; the claimed runs, as stored.

    The rows are locked since they were read, so the claimed runs are the
    chosen ones with the new values; only their ids come back from the
    database, which confirms the compare-and-set on the state.
    """
    if not chosen:
        return []
    lease = lease.astimezone(UTC)  # as a read would return it
    values: dict[str, Any] = {
        "state": PENDING, "worker": worker, "lease_expires_at": lease, "state_reason": f"claimed by {worker}",
    }
    params = {"ids": [run.id for run in chosen], "worker": worker, "lease": lease, "reason": values["state_reason"]}
    claimed = set(conn.execute(_MARK_CLAIMED, params).scalars())
    ordered = [replace(run, **values) for run in chosen if run.id in claimed]
    write_events(conn, [(run, SCHEDULED) for run in ordered], now)
    return ordered


_MARK_CLAIMED = (
    runs.update()
    .where(_C.id.in_(bindparam("ids", expanding=True)), _C.state == SCHEDULED)
    .values(state=PENDING, worker=bindparam("worker"), lease_expires_at=bindparam("lease"),
            state_reason=bindparam("reason"))
    .returning(_C.id)
)


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
