"""Forgetting runs that ended long ago (``orchestra daemon --keep-runs``).

A deployment every minute leaves 1,440 runs a day, each with its events and
its log: kept forever, the store and the log directory only grow. Runs that
are over and ended before a cutoff may go, oldest first, a batch at a time
(each batch one short write, so the daemon's loop and other writers wait
for it no longer than for a burst's write). Two kinds of old runs stay:

* runs that are not over: however old, they still hold a slot or a job;
* the latest slot of each schedule (its idempotency key still set): the
  scheduler takes the next slot from the last stored one (``runs.last_slot``),
  so forgetting it would let the schedule's owed slots be made again.
  Older slots are never made again: nothing counts back from the last one.

The run that holds the newest event stays too, so that event ids (SQLite
reuses the largest rowid once it is deleted) never go back, and neither does
the store's change marker, which is the newest event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, exists, func, or_, select
from sqlalchemy.orm import aliased

from orchestra.store.models import STATES, TERMINAL
from orchestra.store.tables import run_events, runs

_C = runs.c
_LATER = aliased(runs)
# "Not in a state that is not over": as an IN list of the terminal states, SQLite would read
# every run that is over through the dispatch index (state first) and sort them all.
_NOT_OVER = [state for state in STATES if state not in TERMINAL]

_LATER_SLOT_EXISTS = exists().where(
    _LATER.c.deployment == _C.deployment,
    _LATER.c.schedule_identity == _C.schedule_identity,
    _LATER.c.idempotency_key.is_not(None),
    _LATER.c.slot_time > _C.slot_time,
)
# Not the latest slot a schedule accounted for (see the module's docstring).
_NOT_A_LAST_SLOT = or_(_C.schedule_identity.is_(None), _C.idempotency_key.is_(None), _C.slot_time.is_(None),
                       _LATER_SLOT_EXISTS)
_NEWEST_EVENT_RUN = select(run_events.c.run_id).where(
    run_events.c.id == select(func.max(run_events.c.id)).scalar_subquery())


def forgettable_runs(conn: Connection, ended_before: datetime, limit: int) -> list[str]:
    """Ids of up to ``limit`` runs that may be forgotten, oldest first.

    Read through the creation-time index (a run ends after it is made), in
    its order, so a batch reads the oldest rows, not the whole table.
    """
    query = (
        select(_C.id)
        .where(_C.created_at < ended_before, _C.state.not_in(_NOT_OVER), _C.end_time < ended_before,
               _NOT_A_LAST_SLOT, _C.id.not_in(_NEWEST_EVENT_RUN))
        .order_by(_C.created_at, _C.id)
        .limit(limit)
    )
    return list(conn.scalars(query))


def forget_runs(conn: Connection, run_ids: Sequence[str]) -> int:
    """Delete these runs, only those that are over (a run never leaves a terminal state, so
    the check is against a mistaken caller); how many went. Their events go with them: the
    events' foreign key deletes in cascade (SQLite connections turn foreign keys on)."""
    if not run_ids:
        return 0
    return conn.execute(delete(runs).where(_C.id.in_(run_ids), _C.state.not_in(_NOT_OVER))).rowcount
