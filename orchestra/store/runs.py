"""Run queries: create, look up, list, events, and the scheduler's bookkeeping.

Called through ``Store``; state changes of existing runs live in
``transitions.py`` and dispatch in ``claim.py``. Scheduled runs are inserted
with ``ON CONFLICT DO NOTHING`` on their idempotency key (built by the
scheduler from the spec, never from a database id), so inserting the same
slot twice, from a restart or from a second daemon, is a no-op.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Result, Row, and_, bindparam, func, or_, select

from orchestra.errors import NotFound
from orchestra.store.direct import DirectStatement
from orchestra.store.engine import Database
from orchestra.store.models import INITIAL_STATES, SCHEDULED, TERMINAL, NewRun, Run, RunEvent
from orchestra.store.tables import run_events, runs

_C = runs.c
MIN_PREFIX = 6
_HEX = frozenset("0123456789abcdef")


# ``Run``'s fields follow the table's columns in order (tests/test_store_fast_paths.py checks it).
RUN_COLUMNS = tuple(runs.c.keys())


def to_run(row: Row[Any]) -> Run:
    return Run(**row._mapping)


def runs_from(result: Result[Any]) -> list[Run]:
    """The runs of a ``select(runs)`` (or ``RETURNING *``) result.

    Built positionally when the result has exactly the table's columns, in
    order (checked once per result, not per row): a claim or a batch of
    transitions converts every row it reads, and by name it cost four times as much.
    """
    if tuple(result.keys()) == RUN_COLUMNS:
        return [Run(*row) for row in result]
    return [to_run(row) for row in result]


def new_run_row(new: NewRun, now: datetime) -> dict[str, Any]:
    """The row for ``new``, with a fresh id; refuses states a run cannot start in."""
    if new.state not in INITIAL_STATES:
        raise ValueError(f"a run cannot be created in state {new.state!r}")
    if new.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    slot = new.slot_time or (new.scheduled_time if new.schedule_identity else None)
    return {
        "id": uuid.uuid4().hex, "deployment": new.deployment, "pool": new.pool,
        "queue": new.queue, "idempotency_key": new.idempotency_key,
        "schedule_identity": new.schedule_identity, "slot_time": slot, "trigger": new.trigger,
        "state": new.state, "state_reason": new.state_reason or f"created by {new.trigger}",
        "attempt": 1, "max_attempts": new.max_attempts,
        "retry_delay_seconds": new.retry_delay_seconds, "timeout_seconds": new.timeout_seconds,
        "parameters": new.parameters, "job_variables": new.job_variables,
        "variables_patch": None, "job": None, "worker": None, "lease_expires_at": None,
        "runner_ident": None, "exit_code": None, "scheduled_time": new.scheduled_time,
        "created_at": now, "start_time": None, "end_time": now if new.state in TERMINAL else None,
    }


def insert_scheduled_runs(db: Database, conn: Connection, new_runs: Sequence[NewRun], now: datetime) -> int:
    """Insert-or-ignore on the idempotency key; each new run gets its creation event."""
    rows = {row["id"]: row for row in (new_run_row(new, now) for new in new_runs)}
    if not rows:
        return 0
    statement = db.insert_ignore(runs).returning(_C.id)
    inserted = conn.execute(statement, list(rows.values())).scalars().all()
    write_events(conn, ((rows[i], None) for i in inserted), now)
    return len(inserted)


def create_run(conn: Connection, new: NewRun, now: datetime) -> Run:
    row = new_run_row(new, now)
    created = conn.execute(runs.insert().values(row).returning(*runs.c)).one()
    write_events(conn, [(row, None)], now)
    return to_run(created)


def write_events(
    conn: Connection,
    changes: Iterable[tuple[dict[str, Any] | Run, str | None]],
    now: datetime,
    reason: str | None = None,
) -> None:
    """One event per (run after the change, state before it), in one bulk insert.

    The reason is the run's new ``state_reason`` unless ``reason`` is given.
    """
    insert_events(conn, [event_row(run, from_state, now, reason) for run, from_state in changes])


def event_row(
    run: dict[str, Any] | Run, from_state: str | None, now: datetime, reason: str | None = None
) -> dict[str, Any]:
    """The ``run_events`` row recording that ``run`` (as it is after the change) left ``from_state``."""
    return {
        "run_id": _get(run, "id"), "time": now, "from_state": from_state,
        "to_state": _get(run, "state"), "reason": reason or _get(run, "state_reason"),
        "attempt": _get(run, "attempt"),
    }


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Rows made by ``event_row``, in one statement."""
    if rows:
        _INSERT_EVENTS.executemany(conn, rows)


EVENT_KEYS = ("run_id", "time", "from_state", "to_state", "reason", "attempt")  # what ``event_row`` gives
_INSERT_EVENTS = DirectStatement(run_events.insert(), column_keys=EVENT_KEYS)


def _get(run: dict[str, Any] | Run, key: str) -> Any:
    return run[key] if isinstance(run, dict) else getattr(run, key)


def get_run(conn: Connection, run_id: str) -> Run:
    """By full id or by a unique prefix of at least ``MIN_PREFIX`` characters, like git."""
    prefix = run_id.strip().lower()
    if len(prefix) < MIN_PREFIX or not set(prefix) <= _HEX:
        raise NotFound(f"run {run_id!r} not found (give at least {MIN_PREFIX} hex characters of its id)")
    # A range, not LIKE: PostgreSQL only uses the primary key index for LIKE under the C collation.
    query = select(runs).where(_C.id >= prefix, _C.id < prefix + "g").order_by(_C.id).limit(2)
    rows = [r for r in conn.execute(query) if r.id.startswith(prefix)]
    if not rows:
        raise NotFound(f"run {run_id!r} not found")
    if len(rows) > 1:
        raise NotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")
    return to_run(rows[0])


def get_runs(conn: Connection, ids: Collection[str]) -> dict[str, Run]:
    if not ids:
        return {}
    return {run.id: run for run in runs_from(conn.execute(select(runs).where(_C.id.in_(sorted(ids)))))}


def state_filter(states: str | Collection[str]) -> Any:
    return _C.state.in_(sorted({states} if isinstance(states, str) else set(states)))


def list_runs(
    conn: Connection,
    *,
    deployment: str | None = None,
    state: str | Collection[str] | None = None,
    pool: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_cursor: str | None = None,
) -> list[Run]:
    """Newest first by (created_at, id). ``since``/``until`` bound ``scheduled_time``
    (inclusive/exclusive): "what ran or will run in this window"."""
    query = select(runs).order_by(_C.created_at.desc(), _C.id.desc()).limit(limit)
    if deployment is not None:
        query = query.where(_C.deployment == deployment)
    if state is not None:
        query = query.where(state_filter(state))
    if pool is not None:
        query = query.where(_C.pool == pool)
    if since is not None:
        query = query.where(_C.scheduled_time >= since)
    if until is not None:
        query = query.where(_C.scheduled_time < until)
    if before_cursor is not None:
        created, run_id = parse_cursor(before_cursor)
        query = query.where(or_(_C.created_at < created, and_(_C.created_at == created, _C.id < run_id)))
    return runs_from(conn.execute(query))


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    created, sep, run_id = cursor.rpartition("/")
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        when = None
    if not sep or when is None or when.tzinfo is None or not run_id:
        raise ValueError(f"not a run cursor: {cursor!r}")
    return when, run_id


def runs_in_states(
    conn: Connection,
    states: str | Collection[str],
    *,
    pool: str | None = None,
    worker: str | None = None,
    deployment: str | None = None,
) -> list[Run]:
    """All runs in ``states`` (oldest due first); meant for the small active/pending sets."""
    filters = {"pool": pool, "worker": worker, "deployment": deployment}
    given = {name: value for name, value in filters.items() if value is not None}
    wanted = sorted({states} if isinstance(states, str) else set(states))
    query = _runs_in_states_query(tuple(sorted(given)))
    return [Run(*row) for row in query.rows(conn, {"states": wanted, **given})]


@functools.cache
def _runs_in_states_query(filters: tuple[str, ...]) -> DirectStatement:
    """Built once per combination of filters: a worker asks this on every pass (its runs
    being cancelled), and building a statement costs more than running it on a small
    indexed set."""
    query = select(runs).where(_C.state.in_(bindparam("states", expanding=True)))
    for name in filters:
        query = query.where(_C[name] == bindparam(name))
    return DirectStatement(query.order_by(_C.scheduled_time, _C.created_at, _C.id))


def events(conn: Connection, run_id: str) -> list[RunEvent]:
    query = select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.id)
    return [RunEvent(**r._mapping) for r in conn.execute(query)]


def last_slot(conn: Connection, deployment: str, schedule_identity: str) -> datetime | None:
    """The latest slot this schedule has accounted for (run, missed or skipped).

    Withdrawn runs (their key cleared, see ``transitions.withdraw_scheduled``)
    do not count: if the schedule comes back, those slots are owed again.
    Read backwards along the schedule's slots (``ix_runs_schedule_slot``): one
    step, or a few past withdrawn runs, however long the history.
    """
    rows = _LAST_SLOT.rows(conn, {"deployment": deployment, "identity": schedule_identity})
    latest: datetime | None = rows[0][0] if rows else None
    return latest


def last_slots(conn: Connection, schedules: Iterable[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    """``last_slot`` of each (deployment, schedule identity) that has one, for a scheduler
    that (re)loads all its schedules: a step of the index each, in one read."""
    found = {}
    for deployment, identity in schedules:
        latest = last_slot(conn, deployment, identity)
        if latest is not None:
            found[(deployment, identity)] = latest
    return found


_LAST_SLOT = DirectStatement(
    select(_C.slot_time)
    .where(_C.deployment == bindparam("deployment"), _C.schedule_identity == bindparam("identity"),
           _C.slot_time.is_not(None), _C.idempotency_key.is_not(None))
    .order_by(_C.slot_time.desc())
    .limit(1)
)


def next_due_time(conn: Connection, pool: str | None = None) -> datetime | None:
    """When the earliest Scheduled run falls due, so a worker can sleep until then
    instead of polling."""
    query, params = (_NEXT_DUE, {}) if pool is None else (_NEXT_DUE_IN_POOL, {"pool": pool})
    earliest: datetime | None = query.scalar(conn, params)
    return earliest


# Asked on every pass of the daemon, so built once (see ``_runs_in_states_query``).
_EARLIEST_DUE = select(func.min(_C.scheduled_time)).where(_C.state == SCHEDULED)
_NEXT_DUE = DirectStatement(_EARLIEST_DUE)
_NEXT_DUE_IN_POOL = DirectStatement(_EARLIEST_DUE.where(_C.pool == bindparam("pool")))
