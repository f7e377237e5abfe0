"""State changes of existing runs: guarded transitions, leases, withdrawals.

Every state change goes through the transition table in ``models.py`` and
writes a ``run_events`` row in the same transaction, so the history of a run
is never out of step with its state. Changes are compare-and-set: the rows
are read and locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite
the write transaction already excludes every other writer), checked in
Python against the table, the caller's ``expect``ed states and ``match``ed
fields, and then written with ``UPDATE ... WHERE state = <the state we
checked>``; either way a racing cancel and completion cannot both win.

``transition_many`` does this for a batch in one transaction and a fixed
number of statements (one locking read, one ``UPDATE`` executed for many
rows, one bulk event insert), whatever the batch size: a worker that starts
or finishes eight jobs in one pass pays for one write, not eight. A request
that fails its guard is answered with its ``Conflict`` (or ``NotFound``) and
the others still apply. ``transition`` is the batch of one.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select

from orchestra.errors import Conflict, NotFound
from orchestra.store.direct import DirectStatement
from orchestra.store.models import (
    ACTIVE,
    CANCELLED,
    PENDING,
    RUNNING,
    SCHEDULED,
    STATES,
    TERMINAL,
    Run,
    can_transition,
    evolve,
)
from orchestra.store.runs import event_row, insert_events, runs_from, to_run, write_events
from orchestra.store.tables import runs

_C = runs.c

SETTABLE_FIELDS = frozenset({
    "exit_code", "worker", "runner_ident", "start_time", "end_time", "lease_expires_at",
    "job", "variables_patch", "attempt", "scheduled_time", "state_reason",
})
MATCHABLE_FIELDS = frozenset(_C.keys()) - {"state"}  # the state has ``expect``
WITHDRAWN_REASON = "schedule removed or changed"

TransitionResult = Run | Conflict | NotFound


@dataclass(frozen=True)
class TransitionRequest:
    """One compare-and-set state change, as ``transition_many`` takes it.

    ``expect``: the states the run must be in (None: any the table allows).
    ``match``: stored fields that must still hold these values, e.g.
    ``{"worker": me, "attempt": 3}``, so "still my attempt?" is checked in the
    same transaction instead of by a read before it. ``fields``: values to set
    besides the state (see ``SETTABLE_FIELDS``); they win over implied ones.
    """

    run_id: str
    to_state: str
    reason: str
    expect: Collection[str] | None = None
    match: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse requests no stored state could make valid: a caller's bug, not a conflict."""
        unknown = set(self.fields) - SETTABLE_FIELDS
        if unknown:
            raise TypeError(f"transition() cannot set {sorted(unknown)}")
        unmatchable = set(self.match) - MATCHABLE_FIELDS
        if unmatchable:
            raise TypeError(f"transition() cannot match on {sorted(unmatchable)}")
        if self.to_state not in STATES:
            raise ValueError(f"unknown run state {self.to_state!r}")


def transition(
    conn: Connection,
    run_id: str,
    to_state: str,
    reason: str,
    now: datetime,
    *,
    expect: Collection[str] | None = None,
    match: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any],
) -> Run:
    """Move a run to ``to_state`` if the table allows it from its current state
    (and, with ``expect``, only from one of those states; with ``match``, only
    while those fields hold those values); else ``Conflict`` or ``NotFound``."""
    request = TransitionRequest(run_id, to_state, reason, expect, match or {}, fields)
    result = transition_many(conn, [request], now)[0]
    if isinstance(result, Run):
        return result
    raise result


def transition_many(conn: Connection, requests: Sequence[TransitionRequest], now: datetime) -> list[TransitionResult]:
    """Apply ``requests`` in order in the caller's transaction; one answer per request.

    Each request sees the run as the requests before it left it, so two
    requests for one run chain like two ``transition`` calls. A request whose
    guard fails gets its ``Conflict`` (or ``NotFound``) and changes nothing;
    it does not stop the others. Malformed requests (unknown state or field)
    raise before anything is read.
    """
    for request in requests:
        request.check()
    if not requests:
        return []
    batch = _Batch(_locked(conn, {request.run_id for request in requests}))
    results = [batch.apply(request, now) for request in requests]
    batch.write(conn)
    return results


class RunsChanged(Exception):
    """A run of a ``transition_seen`` batch is no longer as its caller saw it: the
    caller's transaction must be rolled back and the batch sent ``transition_many``'s way."""


Seen = tuple[Run, TransitionRequest]  # a request, and its run as the caller last saw it stored


def transition_seen(conn: Connection, moves: Sequence[Seen], now: datetime,
                    events_out: list[dict[str, Any]] | None = None) -> list[TransitionResult]:
    """``transition_many`` for runs the caller holds as stored, without reading them.

    A worker moving its own runs (a job started, a job ended) knows each run
    as stored: the claim or the last move returned it, and while the run is
    in that state under that worker and attempt, nobody else changes it. So
    when every request expects exactly the state its run was seen in and
    matches the run's worker and attempt, the checks run on the seen runs and
    the ``UPDATE``'s ``WHERE`` on those three columns is the compare-and-set.
    Two requests for one run chain as in ``transition_many``: the second is
    checked against what the first left (a job that started and already
    ended: Pending -> Running -> Completed, written once, with both events).
    If a row fails the compare-and-set (a cancel landed, another daemon
    recovered the run), ``RunsChanged`` is raised: the caller rolls back and
    uses ``transition_many``, which answers that request with its ``Conflict``.
    Any other batch goes ``transition_many``'s way at once. With ``events_out``,
    the events are appended there for the caller to insert in the same
    transaction (one insert for several writes of a pass), not inserted here.
    """
    for _, request in moves:
        request.check()
    batch = _seen_batch(moves, now) if conn.dialect.supports_sane_multi_rowcount else None
    if batch is None:
        return transition_many(conn, [request for _, request in moves], now)
    if len(batch.groups) > 1 and conn.dialect.name == "postgresql":
        # Several UPDATEs lock rows group by group: take every lock first, in id
        # order as ``_LOCK`` does, so that two transactions cannot deadlock.
        conn.execute(_LOCK_IDS, {"ids": sorted(batch.stored)})
    for columns, params in batch.groups.items():
        params.sort(key=lambda row: row["b_id"])
        if _seen_update_statement(columns).executemany(conn, params) != len(params):
            raise RunsChanged()
    if events_out is None:
        insert_events(conn, batch.events)
    else:
        events_out += batch.events
    return list(batch.results)


@dataclass
class _SeenBatch:
    """What ``transition_seen`` writes: per set of changed columns, one executemany."""

    results: list[Run] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, Run] = field(default_factory=dict)  # run id -> as seen: the compare-and-set
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)


def _seen_batch(moves: Sequence[Seen], now: datetime) -> _SeenBatch | None:
    """The runs after the moves, their events and the rows to write, grouped by the
    columns they change (writing a column a move did not set would write back a
    value the caller may hold stale, a lease renewed since, say); None if the batch
    does not qualify (see ``transition_seen``)."""
    if not moves:
        return None
    batch = _SeenBatch()
    current: dict[str, Run] = {}  # run id -> as the moves so far left it
    changed: dict[str, set[str]] = {}
    for seen, request in moves:
        if request.run_id != seen.id:
            return None
        base = current.get(seen.id, seen)
        if (request.expect != {base.state} or base.worker is None
                or dict(request.match) != {"worker": base.worker, "attempt": base.attempt}
                or _refusal(base, request) is not None):
            return None
        values = _implied_values(base, request.to_state, request.reason, now) | dict(request.fields)
        result = evolve(base, {**_as_stored(values), "state": request.to_state})
        batch.stored.setdefault(seen.id, seen)
        current[seen.id] = result
        changed.setdefault(seen.id, {"state"}).update(values)
        batch.results.append(result)
        batch.events.append(event_row(result, base.state, now, request.reason))
    for run_id, names in changed.items():
        columns, seen, final = tuple(sorted(names)), batch.stored[run_id], current[run_id]
        batch.groups.setdefault(columns, []).append(
            {"b_id": run_id, "b_state": seen.state, "m_worker": seen.worker, "m_attempt": seen.attempt,
             **{f"v_{column}": getattr(final, column) for column in columns}})
    return batch


@functools.cache
def _seen_update_statement(columns: tuple[str, ...]) -> DirectStatement:
    """``UPDATE runs SET <columns> WHERE id, state, worker and attempt are as seen``, for executemany."""
    return DirectStatement(
        runs.update()
        .where(_C.id == bindparam("b_id"), _C.state == bindparam("b_state"),
               _C.worker == bindparam("m_worker"), _C.attempt == bindparam("m_attempt"))
        .values({column: bindparam(f"v_{column}") for column in columns})
    )


def _locked(conn: Connection, run_ids: Collection[str]) -> dict[str, Run]:
    return {run.id: run for run in runs_from(conn.execute(_LOCK, {"ids": sorted(run_ids)}))}


# Statements of every transition are built once: building one costs about as
# much as running it. In id order, so that two batches locking overlapping
# runs on PostgreSQL cannot deadlock.
_LOCK = select(runs).where(_C.id.in_(bindparam("ids", expanding=True))).order_by(_C.id).with_for_update()
_LOCK_IDS = select(_C.id).where(_C.id.in_(bindparam("ids", expanding=True))).order_by(_C.id).with_for_update()


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> Any:
    """``UPDATE runs SET <columns> WHERE id = :b_id AND state = :b_state``, for executemany."""
    return (
        runs.update()
        .where(_C.id == bindparam("b_id"), _C.state == bindparam("b_state"))
        .values({column: bindparam(f"v_{column}") for column in columns})
    )


class _Batch:
    """The locked runs of one ``transition_many`` as its requests change them, in
    memory, until ``write`` stores the end result with one UPDATE for all runs."""

    def __init__(self, locked: dict[str, Run]) -> None:
        self.runs = locked  # run id -> the run as the requests so far left it
        self.stored_state = {run_id: run.state for run_id, run in locked.items()}  # the compare-and-set
        self.changed: dict[str, set[str]] = {}  # run id -> the columns the requests set
        self.events: list[dict[str, Any]] = []

    def apply(self, request: TransitionRequest, now: datetime) -> TransitionResult:
        current = self.runs.get(request.run_id)
        if current is None:
            return NotFound(f"run {request.run_id!r} not found")
        refusal = _refusal(current, request)
        if refusal is not None:
            return Conflict(refusal)
        values = _implied_values(current, request.to_state, request.reason, now) | dict(request.fields)
        changed = evolve(current, {**_as_stored(values), "state": request.to_state})
        self.runs[current.id] = changed
        self.changed.setdefault(current.id, {"state"}).update(values)
        self.events.append(event_row(changed, current.state, now, request.reason))
        return changed

    def write(self, conn: Connection) -> None:
        """One UPDATE executed for every changed run (each compared with the state it
        was locked in), then every event in one insert."""
        if not self.changed:
            return
        columns = sorted(set().union(*self.changed.values()))
        params = [
            {"b_id": run_id, "b_state": self.stored_state[run_id],
             **{f"v_{column}": getattr(self.runs[run_id], column) for column in columns}}
            for run_id in self.changed
        ]
        written = conn.execute(_update_statement(tuple(columns)), params).rowcount
        if written != len(params) and (len(params) == 1 or conn.dialect.supports_sane_multi_rowcount):
            # unreachable under our locks; kept as the last line of defence (the transaction rolls back)
            raise Conflict("runs changed state concurrently; try again")
        insert_events(conn, self.events)


def _refusal(current: Run, request: TransitionRequest) -> str | None:
    """Why ``request`` may not change ``current``, in words; None if it may."""
    to_state, expect = request.to_state, request.expect
    if expect is not None and current.state not in expect:
        return f"run {current.id} is {current.state}, not {' or '.join(sorted(expect))}"
    if current.state in TERMINAL:
        return f"run {current.id} is already {current.state}; a finished run cannot change"
    if not can_transition(current.state, to_state):
        return f"run {current.id} is {current.state} and cannot become {to_state}"
    for name, wanted in request.match.items():
        actual = getattr(current, name)
        if actual != wanted:
            return f"run {current.id} has {name} {actual!r}, not {wanted!r}"
    return None


def _as_stored(values: dict[str, Any]) -> dict[str, Any]:
    """Values as a read would return them: times in UTC (the store keeps no zone).
    Naive times stay naive, so that writing them fails as it always has."""
    return {k: v.astimezone(UTC) if isinstance(v, datetime) and v.tzinfo else v for k, v in values.items()}


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


def take_over(conn: Connection, run_id: str, *, from_worker: str | None, attempt: int, worker: str,
              lease_until: datetime, reason: str, now: datetime, runner_ident: str | None = None,
              start_time: datetime | None = None, job: dict[str, Any] | None = None,
              variables_patch: list[dict[str, Any]] | None = None) -> Run | None:
    """Hand an active run to ``worker`` (a job that outlived its worker, adopted by
    another); None if the run is no longer that worker's attempt.

    Without ``runner_ident``, the state stays. With it, the run is the Pending
    attempt whose job started but was never recorded: it moves to Running
    with that ident and ``start_time``, and with its rendered ``job`` and
    ``variables_patch`` where the adopter could tell them (else unknown).
    """
    conditions = [_C.id == run_id, _C.worker.is_(None) if from_worker is None else _C.worker == from_worker,
                  _C.attempt == attempt]
    values: dict[str, Any] = {"worker": worker, "lease_expires_at": lease_until}
    if runner_ident is None:
        conditions.append(_C.state.in_(sorted(ACTIVE)))
    else:
        conditions += [_C.state == PENDING, _C.runner_ident.is_(None)]
        values.update(state=RUNNING, state_reason=reason, runner_ident=runner_ident, start_time=start_time or now)
        if job is not None:
            values.update(job=job, variables_patch=variables_patch)
    row = conn.execute(runs.update().where(*conditions).values(**values).returning(*runs.c)).first()
    if row is None:
        return None
    run = to_run(row)
    write_events(conn, [(run, run.state if runner_ident is None else PENDING)], now, reason)
    return run


def expired_leases(conn: Connection, now: datetime) -> list[Run]:
    """Active runs whose worker stopped renewing: candidates for adoption or Crashed."""
    query = (
        select(runs)
        .where(_C.state.in_(sorted(ACTIVE)), _C.lease_expires_at.is_not(None), _C.lease_expires_at < now)
        .order_by(_C.lease_expires_at, _C.id)
    )
    return runs_from(conn.execute(query))


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
    withdrawn = runs_from(conn.execute(statement))
    write_events(conn, [(run, SCHEDULED) for run in withdrawn], now)
    return len(withdrawn)
