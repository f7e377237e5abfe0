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
a busy pool can take costs a few rows, not a page of fifty: the first page
asks for one run more than the claim wants, which in a burst is all it needs
(the extra run tells the worker that more are due).

A claim made through a ``DispatchCache`` (every ``Store`` keeps one) reads
the pool, its queues and the deployments it meets once per resource
revision: the revision is read in the claim's own transaction (after the
claim lock) and every resource change bumps it in the changing one, so the
cached values are the stored ones. (On PostgreSQL a change committed between
that read and the claim's own reads would have been seen without the cache:
the claim then acts as if it had begun a moment earlier.) In a burst of
short runs this spared three reads per claim.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select

from orchestra.store import resources as resource_queries
from orchestra.store.direct import DirectStatement
from orchestra.store.dispatch import DEFAULT_QUEUE, READY, Dispatch, QueueView
from orchestra.store.engine import Database
from orchestra.store.models import ACTIVE, PENDING, SCHEDULED, Run, StoredResource, effective_paused, evolve
from orchestra.store.runs import event_row, insert_events
from orchestra.store.tables import resources, runs

_C = runs.c
MIN_PAGE = 16  # due runs read per page at least, so runs held back cost few round trips
LOOKAHEAD = 8  # deployments read at least at once when a run needs an unknown one
PRELOAD_LIMIT = 2000  # due runs whose deployments a rehearsed claim reads ahead, at most


@dataclass
class _Snapshot:
    """Resources as stored under one revision, filled as claims meet them. Values
    are only ever added, and two claims adding one name add the same value."""

    revision: int | None
    pools: dict[str, StoredResource | None] = field(default_factory=dict)
    queues: dict[str, dict[str, QueueView]] = field(default_factory=dict)  # pool -> its queues
    deployments: dict[str, StoredResource | None] = field(default_factory=dict)


class DispatchCache:
    """The resources claims read, kept while the resource revision stays the same.

    Thread-safe: a new revision replaces the snapshot as a whole, and a claim
    keeps the snapshot it started with.
    """

    def __init__(self) -> None:
        self._snapshot = _Snapshot(None)
        self._lock = threading.Lock()

    def at(self, revision: int) -> _Snapshot:
        """The snapshot of ``revision`` (read in the caller's transaction), fresh if it moved."""
        with self._lock:
            if self._snapshot.revision != revision:
                self._snapshot = _Snapshot(revision)
            return self._snapshot


def load_dispatch(conn: Connection, pool: str, active: Mapping[tuple[str, str, str], int] | None = None,
                  snapshot: _Snapshot | None = None) -> Dispatch:
    """The pool, its queues and the active-run counts, read in the caller's transaction
    (the pool and queues from ``snapshot`` when it has them)."""
    known = snapshot or _Snapshot(None)
    if pool not in known.pools:
        known.pools[pool] = resource_queries.get_resources(conn, "WorkPool", [pool]).get(pool)
    if pool not in known.queues:
        queues = {q.name: q for q in _pool_queues(conn, pool)}
        queues.setdefault(DEFAULT_QUEUE, QueueView(DEFAULT_QUEUE, math.inf, None, False))
        known.queues[pool] = queues
    return Dispatch(pool, known.pools[pool], dict(known.queues[pool]),
                    _active_counts(conn) if active is None else active)


def _active_counts(conn: Connection) -> Counter[tuple[str, str, str]]:
    """(pool, queue, deployment) -> runs Pending, Running or Cancelling."""
    return Counter({(r[0], r[1], r[2]): r[3] for r in _ACTIVE_COUNTS.rows(conn)})


# Built once: a worker claims on every pass, and building costs about as much as running.
_ACTIVE_COUNTS = DirectStatement(
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
    conn: Connection, dispatch: Dispatch, now: datetime, page: int, claiming: bool, first_page: int | None = None
) -> Iterator[list[Run]]:
    """Due runs in dispatch order, a page at a time (the first of ``first_page`` runs,
    if given). While claiming, each page skips what ``dispatch`` already knows
    cannot start; when explaining, runs in queues unknown to the pool come last."""
    groups: list[list[str] | None] = list(dispatch.queue_groups())
    if not claiming:
        groups.append(None)  # None: every queue not in the pool
    for group in groups:
        after: Run | None = None
        size = first_page or page
        while True:
            if claiming and dispatch.pool_block():
                return
            query = _due_query(dispatch, group, now, claiming, after)
            if query is None:
                break
            batch = [Run(*row) for row in query[0].rows(conn, {**query[1], "page": size})]
            if batch:
                yield batch
            if len(batch) < size:
                break
            after, size = batch[-1], page


def _due_query(
    dispatch: Dispatch, group: list[str] | None, now: datetime, claiming: bool, after: Run | None
) -> tuple[DirectStatement, dict[str, Any]] | None:
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
def _due_statement(other_queues: bool, blocked: bool, keyset: bool, claiming: bool) -> DirectStatement:
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
    return DirectStatement(query.order_by(_C.scheduled_time, _C.created_at, _C.id).limit(bindparam("page")))


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


def _named_resources(conn: Connection, kind: str, names: list[str]) -> dict[str, StoredResource]:
    """``resources.get_resources`` with a statement built once: most claims of a burst read deployments."""
    found = [StoredResource(*row) for row in _NAMED_RESOURCES.rows(conn, {"kind": kind, "names": sorted(names)})]
    return {resource.name: resource for resource in found}


# ``StoredResource``'s fields follow the table's columns (tests/test_store_fast_paths.py checks it).
_NAMED_RESOURCES = DirectStatement(select(resources).where(
    resources.c.kind == bindparam("kind"), resources.c.name.in_(bindparam("names", expanding=True))))


def _load_deployments(conn: Connection, dispatch: Dispatch, batch: list[Run], snapshot: _Snapshot | None = None) -> None:
    """Tell ``dispatch`` the deployments of ``batch`` it does not know yet: from
    ``snapshot`` if it has them, the others read (and kept there)."""
    names = dispatch.missing_deployments([run.deployment for run in batch])
    known = snapshot.deployments if snapshot is not None else {}
    unknown = [name for name in names if name not in known]
    if unknown:
        found = _named_resources(conn, "Deployment", unknown)
        known.update({name: found.get(name) for name in unknown})
    dispatch.deployments.update({name: known[name] for name in names})


def preload_deployments(conn: Connection, pool: str, until: datetime, snapshot: _Snapshot,
                        limit: int = PRELOAD_LIMIT) -> list[str]:
    """Read into ``snapshot`` the deployments of the runs of ``pool`` due by ``until``
    (of the first ``limit`` of them) that it does not hold yet, in one query; the
    ids of those runs, in time order.

    For a rehearsed claim (``Store.rehearse_claim``): the claims of a burst then
    read no deployment, where each would read those of the few runs it takes,
    and the worker can make the runs' log files before they start.
    """
    due = _DUE_RUNS.rows(conn, {"pool": pool, "until": until, "limit": limit})
    unknown = sorted({row[1] for row in due if row[1] not in snapshot.deployments})
    if unknown:
        found = _named_resources(conn, "Deployment", unknown)
        snapshot.deployments.update({name: found.get(name) for name in unknown})
    return [row[0] for row in due]


_DUE_RUNS = DirectStatement(
    select(_C.id, _C.deployment)
    .where(_C.state == SCHEDULED, _C.pool == bindparam("pool"), _C.scheduled_time <= bindparam("until"))
    .order_by(_C.scheduled_time, _C.created_at, _C.id)
    .limit(bindparam("limit"))
)


def claim_runs(
    db: Database, conn: Connection, pool: str, *, now: datetime, worker: str, max_count: int,
    lease_seconds: float, event_time: datetime, queues: Collection[str] | None = None,
    cache: DispatchCache | None = None,
) -> list[Run]:
    """Claim up to ``max_count`` due runs of ``pool`` for ``worker`` in the caller's
    write transaction; they become Pending with a lease from ``now``.

    ``now`` decides what is due; ``event_time`` (the store clock) stamps the
    events, so a run's history stays in clock order whatever ``now`` says.
    A pool at its limit costs no read of runs: the count is capped at the
    pool's room before the walk, which then reads no more than it can use.
    With ``queues``, only runs of those queues of the pool are claimed.
    With ``cache``, resources come from it while the resource revision holds.
    """
    return claim_with_resources(db, conn, pool, now=now, worker=worker, max_count=max_count,
                                lease_seconds=lease_seconds, event_time=event_time, queues=queues,
                                cache=cache).runs


@dataclass(frozen=True)
class Claimed:
    """The runs one claim made Pending, with the deployments it read for them."""

    runs: list[Run]
    deployments: dict[str, StoredResource | None]  # by name; None for one that does not exist
    revision: int | None  # the resource revision they were read under (None: no cache)
    left_due: datetime | None = None  # the due time of a run the claim left due, if it met one


def claim_with_resources(
    db: Database, conn: Connection, pool: str, *, now: datetime, worker: str, max_count: int,
    lease_seconds: float, event_time: datetime, queues: Collection[str] | None = None,
    cache: DispatchCache | None = None, events_out: list[dict[str, Any]] | None = None,
) -> Claimed:
    """``claim_runs``, and the deployments the claim read: every claimed run's is among
    them, so the caller can render their jobs without reading them again. With
    ``events_out``, the claim's events are appended there for the caller to insert
    in the same transaction, not inserted here."""
    if max_count <= 0:
        return Claimed([], {}, None)
    db.lock(conn, f"orchestra:claim:{pool}")  # PostgreSQL: one claimer per pool at a time
    revision = resource_queries.revision(conn) if cache is not None else None
    snapshot = cache.at(revision) if cache is not None and revision is not None else None
    active = _active_counts(conn)
    dispatch = load_dispatch(conn, pool, active, snapshot)
    if queues is not None:  # a worker serving some queues only: the others are never read
        dispatch.queues = {name: view for name, view in dispatch.queues.items() if name in queues}
    wanted = int(min(max_count, _pool_room(dispatch, active)))
    if wanted == 0:
        return Claimed([], {}, revision)
    chosen, left_due = _choose(conn, dispatch, now, wanted, snapshot)
    claimed = _mark_claimed(conn, chosen, worker, now + timedelta(seconds=lease_seconds), event_time, events_out)
    deployments = {run.deployment: dispatch.deployments.get(run.deployment) for run in claimed}
    return Claimed(claimed, deployments, revision, left_due)


def _choose(conn: Connection, dispatch: Dispatch, now: datetime, wanted: int,
            snapshot: _Snapshot | None = None) -> tuple[list[Run], datetime | None]:
    """Up to ``wanted`` due runs that may start, in dispatch order, and the due time
    of a run left due after them if the walk met one (None: not known).

    Deployments are read as runs need them, a few runs ahead, not for the
    whole page: a claim of eight runs reads about eight deployments. The first
    page holds one run more than wanted: in a burst that run tells the worker
    that more are due, which spares it asking."""
    chosen: list[Run] = []
    pages = _due_pages(conn, dispatch, now, page=max(2 * wanted, MIN_PAGE), claiming=True, first_page=wanted + 1)
    for batch in pages:
        for i, run in enumerate(batch):
            if len(chosen) == wanted:
                return chosen, run.scheduled_time
            if run.deployment not in dispatch.deployments:
                _load_deployments(conn, dispatch, batch[i:i + max(wanted - len(chosen), LOOKAHEAD)], snapshot)
            if dispatch.admit(run) is None:
                chosen.append(run)
        if len(chosen) == wanted:
            break
    return chosen, None


def _mark_claimed(conn: Connection, chosen: list[Run], worker: str, lease: datetime, now: datetime,
                  events_out: list[dict[str, Any]] | None = None) -> list[Run]:
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
    rows = [{"b_id": run.id, "worker": worker, "lease": lease, "reason": values["state_reason"]} for run in chosen]
    if conn.dialect.supports_sane_multi_rowcount and _MARK_ONE_CLAIMED.executemany(conn, rows) == len(rows):
        claimed = {run.id for run in chosen}  # every row: the usual case, without a list to render per claim
    else:  # some were not Scheduled any more (or the driver cannot count): ask which were claimed
        params = {"ids": [run.id for run in chosen], "worker": worker, "lease": lease, "reason": values["state_reason"]}
        claimed = set(conn.execute(_MARK_CLAIMED, params).scalars()) | _claimed_by(conn, chosen, worker)
    ordered = [evolve(run, values) for run in chosen if run.id in claimed]
    events = [event_row(run, SCHEDULED, now) for run in ordered]
    if events_out is None:
        insert_events(conn, events)
    else:
        events_out += events
    return ordered


_MARK_CLAIMED = (
    runs.update()
    .where(_C.id.in_(bindparam("ids", expanding=True)), _C.state == SCHEDULED)
    .values(state=PENDING, worker=bindparam("worker"), lease_expires_at=bindparam("lease"),
            state_reason=bindparam("reason"))
    .returning(_C.id)
)
# The same, one run per row of an executemany: an IN list is rendered anew for every
# claim (its length varies), a fixed statement is not.
_MARK_ONE_CLAIMED = DirectStatement(
    runs.update()
    .where(_C.id == bindparam("b_id"), _C.state == SCHEDULED)
    .values(state=PENDING, worker=bindparam("worker"), lease_expires_at=bindparam("lease"),
            state_reason=bindparam("reason"))
)


def _claimed_by(conn: Connection, chosen: list[Run], worker: str) -> set[str]:
    """Which of ``chosen`` are Pending under ``worker`` now (after a partial executemany)."""
    query = select(_C.id).where(_C.id.in_([run.id for run in chosen]), _C.state == PENDING, _C.worker == worker)
    return set(conn.execute(query).scalars())


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
