"""State changes of existing runs: guarded transitions, leases, withdrawals.

Every state change goes through the transition table in ``models.py`` and
writes a ``run_events`` row in the same transaction, so the history of a run
is never out of step with its state. Changes are compare-and-set in SQL
(``UPDATE ... WHERE state = <the state we checked>``): on PostgreSQL the row
is also locked first, on SQLite the write transaction already excludes
every other writer; either way a racing cancel and completion cannot both win.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from orchestra.errors import Conflict, NotFound
from orchestra.store.models import (
    ACTIVE,
    CANCELLED,
    RUNNING,
    SCHEDULED,
    STATES,
    TERMINAL,
    Run,
    can_transition,
)
from orchestra.store.runs import to_run, write_events
from orchestra.store.tables import runs

_C = runs.c

SETTABLE_FIELDS = frozenset({
    "exit_code", "worker", "runner_ident", "start_time", "end_time", "lease_expires_at",
    "job", "variables_patch", "attempt", "scheduled_time", "state_reason",
})
WITHDRAWN_REASON = "schedule removed or changed"


def transition(
    conn: Connection,
    run_id: str,
    to_state: str,
    reason: str,
    now: datetime,
    *,
    expect: Collection[str] | None = None,
    fields: dict[str, Any],
) -> Run:
    """Move a run to ``to_state`` if the table allows it from its current state
    (and, with ``expect``, only from one of those states); else ``Conflict``."""
    unknown = set(fields) - SETTABLE_FIELDS
    if unknown:
        raise TypeError(f"transition() cannot set {sorted(unknown)}")
    if to_state not in STATES:
        raise ValueError(f"unknown run state {to_state!r}")
    current = _locked(conn, run_id)
    _check_allowed(current, to_state, expect)
    values = _implied_values(current, to_state, reason, now) | fields
    statement = (
        runs.update()
        .where(_C.id == run_id, _C.state == current.state)
        .values(state=to_state, **values)
        .returning(*runs.c)
    )
    row = conn.execute(statement).one_or_none()
    if row is None:  # unreachable under our locks; kept as the last line of defence
        raise Conflict(f"run {run_id} changed state concurrently; try again")
    changed = to_run(row)
    write_events(conn, [(changed, current.state)], now, reason)
    return changed


def _locked(conn: Connection, run_id: str) -> Run:
    row = conn.execute(select(runs).where(_C.id == run_id).with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return to_run(row)


def _check_allowed(current: Run, to_state: str, expect: Collection[str] | None) -> None:
    if expect is not None and current.state not in expect:
        wanted = " or ".join(sorted(expect))
        raise Conflict(f"run {current.id} is {current.state}, not {wanted}")
    if current.state in TERMINAL:
        raise Conflict(f"run {current.id} is already {current.state}; a finished run cannot change")
    if not can_transition(current.state, to_state):
        raise Conflict(f"run {current.id} is {current.state} and cannot become {to_state}")


def _implied_values(current: Run, to_state: str, reason: str, now: datetime) -> dict[str, Any]:
    """Bookkeeping a state implies, unless the caller sets the field itself."""
    values: dict[str, Any] = {"state_reason": reason}
    if to_state == RUNNING and current.start_time is None:
        values["start_time"] = now  # the first start; later attempts are in the events
    if to_state in TERMINAL:
        values |= {"end_time": now, "lease_expires_at": None}
    if to_state == SCHEDULED:
        # Back in the queue: no worker holds it. From Running it is a retry.
        values |= {"worker": None, "lease_expires_at": None, "runner_ident": None, "exit_code": None}
        if current.state == RUNNING:
            values["attempt"] = current.attempt + 1
            values["scheduled_time"] = now + timedelta(seconds=current.retry_delay_seconds)
    return values


def renew_lease(conn: Connection, worker: str, run_ids: Collection[str], until: datetime) -> set[str]:
    """Extend the leases ``worker`` still holds; the ids it lost are simply absent."""
    if not run_ids:
        return set()
    statement = (
        runs.update()
        .where(_C.worker == worker, _C.id.in_(sorted(run_ids)), _C.state.in_(sorted(ACTIVE)))
        .values(lease_expires_at=until)
        .returning(_C.id)
    )
    return set(conn.execute(statement).scalars())


def expired_leases(conn: Connection, now: datetime) -> list[Run]:
    """Active runs whose worker stopped renewing: candidates for adoption or Crashed."""
    query = (
        select(runs)
        .where(_C.state.in_(sorted(ACTIVE)), _C.lease_expires_at.is_not(None), _C.lease_expires_at < now)
        .order_by(_C.lease_expires_at, _C.id)
    )
    return [to_run(r) for r in conn.execute(query)]


def withdraw_scheduled(conn: Connection, deployment: str, keep_identities: Collection[str], now: datetime) -> int:
    """Cancel never-started runs of schedules not in ``keep_identities``, due or not.

    A run that waits (pool full, queue paused) for a schedule that was since
    removed or changed is owed by a spec that no longer exists, so it goes too.

    The runs stay, Cancelled with a reason, so every slot remains accounted
    for; their idempotency key is cleared so that, should the schedule come
    back, the slot can be scheduled again instead of colliding with a run
    that never ran. Manual runs (no schedule identity) are left alone.
    """
    conditions = [
        _C.deployment == deployment, _C.state == SCHEDULED,
        _C.schedule_identity.is_not(None), _C.start_time.is_(None),
    ]
    if keep_identities:
        conditions.append(_C.schedule_identity.not_in(sorted(keep_identities)))
    statement = (
        runs.update()
        .where(*conditions)
        .values(state=CANCELLED, state_reason=WITHDRAWN_REASON, end_time=now, idempotency_key=None)
        .returning(*runs.c)
    )
    withdrawn = [to_run(r) for r in conn.execute(statement)]
    write_events(conn, [(run, SCHEDULED) for run in withdrawn], now)
    return len(withdrawn)
