"""The store's burst paths: ``finish_and_claim`` (a worker's pass in one write) and
the claim's resource cache, which must never serve a stale limit or pause.

Real SQLite (and PostgreSQL when ORCHESTRA_TEST_POSTGRES_URL is set), real
transactions; "another process" is a second ``Store`` on the same database,
which shares nothing in memory with the first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from store_fixtures import (  # noqa: F401
    T0,
    FakeClock,
    clock_fixture,
    db_url_fixture,
    deployment,
    new_run,
    pool,
    queue,
    store_fixture,
)

from orchestra.errors import Conflict
from orchestra.store import (
    CANCELLING,
    COMPLETED,
    PENDING,
    RUNNING,
    SCHEDULED,
    Run,
    Store,
    StoredResource,
    TransitionRequest,
    open_store,
)
from orchestra.store.models import evolve
from orchestra.store.runs import RUN_COLUMNS
from orchestra.store.tables import resources

NOW = T0 + timedelta(hours=1)


@pytest.fixture(name="other")
def other_fixture(db_url: str, clock: FakeClock) -> Iterator[Store]:
    """A second store on the same database: another process, as far as caches go."""
    with open_store(db_url, clock=clock) as opened:
        yield opened


def due(store: Store, name: str, minutes_ago: float = 5, **kw: object) -> Run:
    return store.create_run(new_run(name, NOW - timedelta(minutes=minutes_ago), **kw))  # type: ignore[arg-type]


def claim(store: Store, max_count: int = 10) -> list[Run]:
    return store.claim_runs("local", now=NOW, worker="w1", max_count=max_count)


def start(store: Store, run: Run) -> Run:
    return store.transition(run.id, RUNNING, "started", expect={PENDING})


def ended(run: Run) -> tuple[Run, TransitionRequest]:
    """What a worker sends when the job of ``run`` (as it saw it) exited 0."""
    return run, TransitionRequest(run.id, COMPLETED, "exit code 0", frozenset({RUNNING}),
                                  {"worker": "w1", "attempt": run.attempt}, {"exit_code": 0})


# -- finish_and_claim ----------------------------------------------------------------------------------


def test_finish_and_claim_records_the_ends_and_fills_the_room_they_free(store: Store, clock: FakeClock) -> None:
    store.apply_resources([pool(concurrencyLimit=2), deployment("etl"), deployment("report")], [])
    first = [due(store, "etl", 10), due(store, "etl", 9)]
    waiting = [due(store, "report", 8), due(store, "report", 7), due(store, "etl", 6)]
    running = [start(store, run) for run in claim(store)]
    assert [r.id for r in running] == [r.id for r in first]
    assert claim(store) == []  # the pool is full

    done = store.finish_and_claim([ended(run) for run in running], "local", now=NOW, worker="w1", max_count=10)

    assert [(r.id, r.state, r.exit_code) for r in done.finished] == [(r.id, COMPLETED, 0) for r in running]
    assert [r.id for r in done.claimed] == [r.id for r in waiting[:2]]  # the two freed places, oldest first
    assert all(r.state == PENDING and r.worker == "w1" for r in done.claimed)
    assert done.claimed == [store.get_run(r.id) for r in waiting[:2]]
    assert set(done.deployments) == {"report"}
    assert done.deployments["report"] == store.get_resource("Deployment", "report")
    assert done.next_due == waiting[2].scheduled_time  # one is left due, held back by the limit
    assert done.cancelling == []
    for run in running:
        assert [(e.from_state, e.to_state) for e in store.events(run.id)][-1] == (RUNNING, COMPLETED)
    for run in waiting[:2]:
        event = store.events(run.id)[-1]
        assert (event.from_state, event.to_state, event.reason, event.time) == (
            SCHEDULED, PENDING, "claimed by w1", clock.now)


def test_an_end_that_lost_a_race_is_answered_with_its_conflict_and_the_claim_still_happens(store: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=1), deployment("etl")], [])
    first, second = due(store, "etl", 10), due(store, "etl", 9)
    running = start(store, claim(store)[0])
    assert running.id == first.id
    store.transition(first.id, CANCELLING, "cancel requested", expect={RUNNING})  # a cancel lands first

    done = store.finish_and_claim([ended(running)], "local", now=NOW, worker="w1", max_count=10)

    (refused,) = done.finished
    assert isinstance(refused, Conflict)
    assert store.get_run(first.id).state == CANCELLING  # the cancel stands
    assert [r.id for r in done.cancelling] == [first.id]  # and the worker hears of it in the same answer
    assert done.claimed == []  # the cancelling run still holds the pool's one place
    assert done.next_due == second.scheduled_time


def test_finish_and_claim_with_nothing_ended_is_a_claim(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    runs = [due(store, "etl", m) for m in (3, 2, 1)]
    due(store, "etl", -10)  # not due yet
    done = store.finish_and_claim([], "local", now=NOW, worker="w1", max_count=2)
    assert done.finished == []
    assert [r.id for r in done.claimed] == [r.id for r in runs[:2]]
    assert done.next_due is not None and done.next_due <= NOW  # more are due: the worker comes back at once
    done = store.finish_and_claim([], "local", now=NOW, worker="w1", max_count=2)
    assert [r.id for r in done.claimed] == [runs[2].id]
    assert done.next_due == NOW + timedelta(minutes=10)  # only the future run is left


def test_a_malformed_request_changes_nothing(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    run = due(store, "etl")
    bad = TransitionRequest(run.id, "Finished", "no such state")
    with pytest.raises(ValueError, match="unknown run state"):
        store.finish_and_claim([(run, bad)], "local", now=NOW, worker="w1", max_count=10)
    assert store.get_run(run.id).state == SCHEDULED  # nothing was claimed either


def test_a_failing_claim_rolls_back_the_ends_recorded_before_it(store: Store) -> None:
    """One transaction: if the claim fails, the ends are not recorded either (the
    worker keeps them and records them on its next pass)."""
    store.apply_resources([pool(), deployment("etl")], [])
    due(store, "etl")
    running = start(store, claim(store)[0])
    with pytest.raises(ValueError, match="timezone-aware"):
        # a naive ``now`` is refused by the claim, after the ends were applied in the transaction
        store.finish_and_claim([ended(running)], "local", now=NOW.replace(tzinfo=None), worker="w1",
                               max_count=10)
    assert store.get_run(running.id).state == RUNNING


# -- transition_seen ------------------------------------------------------------------------------------


def started(run: Run) -> tuple[Run, TransitionRequest]:
    """What a worker sends when the job of the claimed ``run`` started."""
    return run, TransitionRequest(run.id, RUNNING, "started by w1", frozenset({PENDING}),
                                  {"worker": "w1", "attempt": run.attempt}, {"runner_ident": f"pid-{run.id[:6]}"})


def test_moves_of_runs_as_seen_are_written_without_reading_the_runs(store: Store, clock: FakeClock) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    for minutes in range(3):
        due(store, "etl", minutes)
    claimed = claim(store)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    running = store.transition_seen([started(run) for run in claimed])
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert running == [store.get_run(run.id) for run in claimed]  # the answers are the runs as stored
    assert all(r.state == RUNNING and r.start_time == clock.now for r in running)
    assert [e.to_state for e in store.events(claimed[0].id)] == [SCHEDULED, PENDING, RUNNING]


def test_a_run_changed_since_it_was_seen_gets_its_conflict_and_the_others_move_once(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    for minutes in range(3):
        due(store, "etl", minutes)
    running = [start(store, run) for run in claim(store)]
    store.transition(running[1].id, CANCELLING, "cancel requested")  # lands after the worker saw it Running
    store.take_over(running[2].id, from_worker="w1", attempt=1, worker="w2", lease_until=NOW, reason="adopted")
    results = store.transition_seen([ended(run) for run in running])
    assert isinstance(results[0], Run) and results[0].state == COMPLETED
    assert isinstance(results[1], Conflict) and isinstance(results[2], Conflict)
    assert [store.get_run(r.id).state for r in running] == [COMPLETED, CANCELLING, RUNNING]
    assert [e.to_state for e in store.events(running[0].id)].count(COMPLETED) == 1  # the undone try left none


def test_moves_that_do_not_qualify_take_the_general_way(store: Store) -> None:
    """Two moves of one run chain; a move without the worker's guard is checked as stored."""
    store.apply_resources([pool(), deployment("etl")], [])
    due(store, "etl")
    (pending,) = claim(store)
    run_then_end = [started(pending), (pending, TransitionRequest(pending.id, COMPLETED, "exit code 0"))]
    first, second = store.transition_seen(run_then_end)
    assert isinstance(first, Run) and isinstance(second, Run)
    assert (first.state, second.state) == (RUNNING, COMPLETED)
    assert [e.to_state for e in store.events(pending.id)] == [SCHEDULED, PENDING, RUNNING, COMPLETED]


# -- the claim's resource cache ------------------------------------------------------------------------


def test_a_pause_made_elsewhere_holds_back_the_next_claim(store: Store, other: Store) -> None:
    store.apply_resources([pool(), deployment("etl"), deployment("report")], [])
    due(store, "etl", 10)
    assert names(claim(store, 1)) == ["etl"]  # the deployment is now in the claim's cache
    due(store, "etl", 9)
    other.set_paused_override("Deployment", "etl", True)
    report = due(store, "report", 1)
    assert [r.id for r in claim(store)] == [report.id]
    other.set_paused_override("Deployment", "etl", None)
    assert names(claim(store)) == ["etl"]


def test_limits_changed_elsewhere_apply_to_the_next_claim(store: Store, other: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=1), deployment("etl")], [])
    for minutes in range(5):
        due(store, "etl", minutes)
    assert len(claim(store)) == 1
    assert claim(store) == []  # full, and the pool's limit is cached
    other.apply_resources([pool(concurrencyLimit=3), deployment("etl")], [])
    assert len(claim(store)) == 2
    other.apply_resources([pool(concurrencyLimit=3), deployment("etl", concurrency={"limit": 4})], [])
    assert len(claim(store)) == 0  # the pool's 3 are taken
    other.apply_resources([pool(concurrencyLimit=10), deployment("etl", concurrency={"limit": 4})], [])
    assert len(claim(store)) == 1  # now the deployment's limit of 4 holds


def test_queues_and_deployments_created_after_a_claim_are_seen(store: Store, other: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    due(store, "etl", 5)
    assert names(claim(store)) == ["etl"]
    due(store, "late", 4)
    due(store, "etl", 3, queue="urgent")
    assert claim(store) == []  # a deployment and a queue that do not exist (yet)
    other.apply_resources([pool(), deployment("etl"), deployment("late"), queue("urgent", priority=1)], [])
    assert names(claim(store)) == ["etl", "late"]  # the new queue first, by priority
    other.set_paused_override("WorkQueue", "urgent", True)
    due(store, "etl", 2, queue="urgent")
    assert claim(store) == []


def test_a_deleted_pool_stops_the_claims(store: Store, other: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    due(store, "etl", 5)
    assert len(claim(store)) == 1
    due(store, "etl", 4)
    other.apply_resources([deployment("etl")], [("WorkPool", "local")])
    assert claim(store) == []
    assert store.finish_and_claim([], "local", now=NOW, worker="w1", max_count=10).claimed == []


def test_a_claim_reads_no_resource_it_already_read_under_the_same_revision(store: Store) -> None:
    store.apply_resources([pool(), queue("urgent", priority=1)] + [deployment(f"d{i}") for i in range(4)], [])
    for i in range(4):
        due(store, f"d{i}", 10 - i)
    assert len(claim(store, 2)) == 2
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert names(claim(store, 1)) == ["d2"]  # a deployment not met before: read
    assert sum("FROM resources" in s for s in statements) == 1
    statements.clear()
    for run in store.runs_in_states(PENDING):
        store.transition(run.id, SCHEDULED, "released")
    statements.clear()
    assert names(claim(store, 3)) == ["d0", "d1", "d2"]  # all met before: nothing read
    assert sum("FROM resources" in s for s in statements) == 0


# -- conversions -----------------------------------------------------------------------------------------


def test_runs_fields_follow_the_tables_columns() -> None:
    """``runs_from`` builds runs positionally: the field order must be the column order."""
    assert tuple(f.name for f in dataclasses.fields(Run)) == RUN_COLUMNS


def test_resource_fields_follow_the_tables_columns() -> None:
    """A claim builds the deployments it reads positionally, as ``runs_from`` builds runs."""
    assert tuple(f.name for f in dataclasses.fields(StoredResource)) == tuple(resources.c.keys())


def test_evolve_is_replace_and_refuses_unknown_fields(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    run = due(store, "etl")
    changed = evolve(run, {"state": PENDING, "worker": "w9"})
    assert changed == dataclasses.replace(run, state=PENDING, worker="w9")
    assert run.state == SCHEDULED and run.worker is None  # the original is untouched
    with pytest.raises(TypeError, match="no field"):
        evolve(run, {"owner": "w9"})


def names(runs: list[Run]) -> list[str]:
    return [r.deployment for r in runs]


def test_a_start_an_end_and_a_job_both_started_and_ended_are_one_write_without_reads(store: Store) -> None:
    """Moves changing different columns are written per set of columns; a run started
    and ended since it was seen chains its two moves, written once with both events."""
    store.apply_resources([pool(), deployment("etl")], [])
    for minutes in range(3):
        due(store, "etl", minutes)
    only_started, quick, long_running = claim(store)
    long_running = start(store, long_running)
    lease = store.get_run(long_running.id).lease_expires_at
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    quick_running = dataclasses.replace(quick, state=RUNNING)
    moves = [started(only_started), started(quick), ended(quick_running), ended(long_running)]
    results = store.transition_seen(moves)
    assert [r.state for r in results if isinstance(r, Run)] == [RUNNING, RUNNING, COMPLETED, COMPLETED]
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in s]
    assert [e.to_state for e in store.events(quick.id)] == [SCHEDULED, PENDING, RUNNING, COMPLETED]
    stored = store.get_run(quick.id)
    assert (stored.state, stored.runner_ident, stored.exit_code) == (COMPLETED, f"pid-{quick.id[:6]}", 0)
    assert store.get_run(only_started.id).state == RUNNING
    assert store.get_run(long_running.id).state == COMPLETED and lease is not None


# -- rehearse_claim --------------------------------------------------------------------------------------


def test_a_rehearsed_claim_answers_as_the_claim_would_and_stores_nothing(store: Store, other: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=2), deployment("etl")], [])
    soon = [store.create_run(new_run("etl", NOW + timedelta(seconds=s))) for s in (1, 2, 3)]
    marker = other.change_marker()

    rehearsed = store.rehearse_claim("local", at=NOW + timedelta(seconds=5), worker="w1", max_count=10)

    assert [r.id for r in rehearsed.claimed] == [r.id for r in soon[:2]]  # the pool's limit holds
    assert rehearsed.deployments == {"etl": store.get_resource("Deployment", "etl")}
    assert rehearsed.next_due == soon[2].scheduled_time
    assert rehearsed.coming == [r.id for r in soon]  # every run due by then: the worker makes their logs
    assert store.rehearse_claim("local", at=NOW + timedelta(seconds=2), worker="w1", max_count=1).coming == \
        [r.id for r in soon[:2]]
    assert other.change_marker() == marker  # rolled back: no run moved, no event written
    assert [other.get_run(r.id).state for r in soon] == [SCHEDULED] * 3
    assert [len(other.events(r.id)) for r in soon] == [1, 1, 1]
    assert claim(store) == []  # and at NOW nothing is due yet
    claimed = store.claim_runs("local", now=NOW + timedelta(seconds=5), worker="w1", max_count=10)
    assert [r.id for r in claimed] == [r.id for r in soon[:2]]  # the real claim, when it comes


def test_after_a_rehearsal_the_claims_of_the_burst_read_no_deployment(store: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=2)] + [deployment(f"job-{i}") for i in range(12)], [])
    at = NOW + timedelta(seconds=5)
    for i in range(12):
        store.create_run(new_run(f"job-{i}", at))
    store.rehearse_claim("local", at=at, worker="w1", max_count=10)
    stored = store.get_resources("Deployment", [f"job-{i}" for i in range(12)])
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    claimed: list[Run] = []
    for _ in range(6):  # the pool takes two at a time: the walk meets every run's deployment
        started = [(run, TransitionRequest(run.id, RUNNING, "started", frozenset({PENDING}),
                                           {"worker": "w1", "attempt": run.attempt})) for run in claimed]
        done = store.finish_and_claim([m for run, start in started for m in ((run, start), ended(run))],
                                      "local", now=at, worker="w1", max_count=10)
        claimed = done.claimed
        assert len(claimed) == 2 and set(done.deployments) == {run.deployment for run in claimed}
        assert all(done.deployments[run.deployment] == stored[run.deployment] for run in claimed)
    assert not [sql for sql in statements if "FROM resources" in sql]
