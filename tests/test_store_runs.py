"""Runs: idempotent insert, lookup, listing, the transition table, events, leases, withdrawal."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from store_fixtures import T0, FakeClock, clock_fixture, db_url_fixture, new_run, scheduled, store_fixture  # noqa: F401

from orchestra.errors import Conflict, NotFound
from orchestra.store import ACTIVE, STATES, TERMINAL, TRANSITIONS, Run, Store
from orchestra.store import runs as runs_module

# How to bring a new (Scheduled) run into each state, through allowed transitions.
PATHS: dict[str, list[str]] = {
    "Scheduled": [],
    "Pending": ["Pending"],
    "Running": ["Pending", "Running"],
    "Cancelling": ["Pending", "Cancelling"],
    "Completed": ["Pending", "Running", "Completed"],
    "Failed": ["Pending", "Running", "Failed"],
    "Crashed": ["Pending", "Running", "Crashed"],
    "Cancelled": ["Cancelled"],
    "Skipped": ["Skipped"],
    "Missed": ["Missed"],
}
EXPECTED_TRANSITIONS = {
    "Scheduled": {"Pending", "Cancelled", "Skipped", "Missed"},
    "Pending": {"Running", "Scheduled", "Cancelling", "Cancelled", "Crashed", "Failed"},
    "Running": {"Completed", "Failed", "Crashed", "Cancelling", "Scheduled"},
    "Cancelling": {"Cancelled", "Completed", "Failed", "Crashed"},
}


def run_in(store: Store, state: str, **kw: object) -> Run:
    run = store.create_run(new_run(**kw))  # type: ignore[arg-type]
    for step in PATHS[state]:
        run = store.transition(run.id, step, f"to {step}")
    assert run.state == state
    return run


# -- insert and create -------------------------------------------------------------


def test_same_key_twice_is_one_run(store: Store) -> None:
    slot = scheduled("etl", T0)
    assert store.insert_scheduled_runs([slot]) == 1
    assert store.insert_scheduled_runs([slot, scheduled("etl", T0 + timedelta(minutes=1))]) == 1
    assert store.insert_scheduled_runs([slot]) == 0
    assert len(store.list_runs()) == 2


def test_duplicate_keys_within_one_insert(store: Store) -> None:
    assert store.insert_scheduled_runs([scheduled("etl", T0), scheduled("etl", T0)]) == 1


def test_inserted_runs_get_a_creation_event(store: Store, clock: FakeClock) -> None:
    store.insert_scheduled_runs([scheduled("etl", T0, identity="cron:0 2 * * * UTC")])
    (run,) = store.list_runs()
    assert (run.state, run.attempt, run.trigger, run.slot_time) == ("Scheduled", 1, "schedule", T0)
    assert run.state_reason == "scheduled by cron:0 2 * * * UTC"
    (event,) = store.events(run.id)
    assert (event.from_state, event.to_state, event.reason, event.attempt, event.time) == (
        None, "Scheduled", "scheduled by cron:0 2 * * * UTC", 1, clock.now,
    )


def test_slots_can_be_recorded_as_missed_or_skipped(store: Store, clock: FakeClock) -> None:
    store.insert_scheduled_runs([
        scheduled("etl", T0, state="Missed", state_reason="missed: later than startingDeadline 1h"),
        scheduled("etl", T0 + timedelta(hours=1), state="Skipped", state_reason="skipped: concurrency limit 1"),
    ])
    runs = {r.state: r for r in store.list_runs()}
    assert set(runs) == {"Missed", "Skipped"}
    assert runs["Missed"].end_time == clock.now
    assert store.events(runs["Skipped"].id)[0].reason == "skipped: concurrency limit 1"


def test_create_run(store: Store, clock: FakeClock) -> None:
    run = store.create_run(new_run("etl", T0, parameters={"region": "eu"}, job_variables={"env": {"A": "1"}},
                                   max_attempts=3, retry_delay_seconds=30, timeout_seconds=3600))
    assert run == store.get_run(run.id)
    assert (run.trigger, run.idempotency_key, run.slot_time, run.queue) == ("manual", None, None, "default")
    assert (run.parameters, run.job_variables, run.max_attempts) == ({"region": "eu"}, {"env": {"A": "1"}}, 3)
    assert run.created_at == clock.now and run.scheduled_time == T0
    assert len(run.id) == 32
    assert store.events(run.id)[0].reason == "created by manual"


def test_runs_cannot_be_created_running(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot be created in state 'Running'"):
        store.create_run(new_run(state="Running"))


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.create_run(new_run(when=datetime(2030, 1, 1)))
    assert store.list_runs() == []


def test_times_come_back_as_utc(store: Store) -> None:
    berlin = datetime(2030, 6, 1, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    run = store.create_run(new_run(when=berlin))
    assert run.scheduled_time == berlin and run.scheduled_time.tzinfo == UTC
    assert store.get_run(run.id).scheduled_time.hour == 0


# -- lookup and listing -------------------------------------------------------------


def test_get_run_by_unique_prefix(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["abcdef0000000000000000000000000a", "abcdef1111111111111111111111111b",
                "0123456789abcdef0123456789abcdef"])
    monkeypatch.setattr(runs_module.uuid, "uuid4", lambda: type("U", (), {"hex": next(ids)})())
    first, second, third = (store.create_run(new_run()) for _ in range(3))
    assert store.get_run(third.id).id == third.id
    assert store.get_run("012345").id == third.id
    assert store.get_run("ABCDEF0").id == first.id
    assert store.get_run("abcdef1").id == second.id
    with pytest.raises(NotFound, match="ambiguous"):
        store.get_run("abcdef")
    with pytest.raises(NotFound, match="at least 6"):
        store.get_run("01234")
    with pytest.raises(NotFound, match="not found"):
        store.get_run("ffffff")
    with pytest.raises(NotFound):
        store.get_run("abcde%")


def test_list_runs_newest_first_with_a_cursor(store: Store, clock: FakeClock) -> None:
    minutes = count()
    for _ in range(5):
        store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(minutes=next(minutes))) for _ in range(5)])
        clock.advance(1)
    everything = store.list_runs(limit=1000)
    assert len(everything) == 25
    assert everything == sorted(everything, key=lambda r: (r.created_at, r.id), reverse=True)
    pages: list[Run] = []
    cursor = None
    for _ in range(10):  # bounded
        page = store.list_runs(limit=7, before_cursor=cursor)
        if not page:
            break
        pages += page
        cursor = page[-1].cursor
    assert pages == everything



def test_list_runs_filters(store: Store) -> None:
    store.insert_scheduled_runs([scheduled("etl", T0), scheduled("etl", T0 + timedelta(hours=1))])
    store.create_run(new_run("report", T0 + timedelta(hours=2), pool="docker"))
    running = run_in(store, "Running", deployment_name="report", when=T0 - timedelta(hours=1))
    assert {r.deployment for r in store.list_runs(deployment="etl")} == {"etl"}
    assert [r.id for r in store.list_runs(state="Running")] == [running.id]
    assert len(store.list_runs(state={"Running", "Scheduled"})) == 4
    assert [r.pool for r in store.list_runs(pool="docker")] == ["docker"]
    window = store.list_runs(since=T0, until=T0 + timedelta(hours=2))
    assert sorted(r.scheduled_time for r in window) == [T0, T0 + timedelta(hours=1)]
    assert len(store.list_runs(limit=2)) == 2


def test_bad_cursor(store: Store) -> None:
    with pytest.raises(ValueError, match="not a run cursor"):
        store.list_runs(before_cursor="yesterday")


def test_active_runs_and_runs_in_states(store: Store) -> None:
    pending = run_in(store, "Pending")
    running = run_in(store, "Running", pool="docker")
    run_in(store, "Completed")
    cancelling = run_in(store, "Cancelling")
    assert {r.id for r in store.active_runs()} == {pending.id, running.id, cancelling.id}
    assert [r.id for r in store.active_runs(pool="docker")] == [running.id]
    assert len(store.runs_in_states("Completed")) == 1
    assert len(store.runs_in_states({"Pending", "Completed"}, pool="local")) == 2


# -- the transition table --------------------------------------------------------------


def test_transition_table_is_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(STATES)
    for state in STATES:
        assert TRANSITIONS[state] == EXPECTED_TRANSITIONS.get(state, set()), state
    assert {"Completed", "Failed", "Crashed", "Cancelled", "Skipped", "Missed"} == TERMINAL
    assert {"Pending", "Running", "Cancelling"} == ACTIVE


@pytest.mark.parametrize("from_state", STATES)
def test_every_transition_pair(store: Store, from_state: str) -> None:
    """Each of the 10 x 10 pairs: allowed ones succeed with an event, others are Conflicts."""
    for to_state in STATES:
        run = run_in(store, from_state)
        before = store.events(run.id)
        if to_state in EXPECTED_TRANSITIONS.get(from_state, set()):
            moved = store.transition(run.id, to_state, f"{from_state}->{to_state}")
            assert moved.state == to_state
            event = store.events(run.id)[-1]
            assert (event.from_state, event.to_state) == (from_state, to_state)
            assert event.reason == f"{from_state}->{to_state}"
        else:
            with pytest.raises(Conflict, match=from_state):
                store.transition(run.id, to_state, "not allowed")
            assert store.get_run(run.id) == run
            assert store.events(run.id) == before


def test_terminal_is_final(store: Store) -> None:
    run = run_in(store, "Completed")
    for to_state in STATES:
        with pytest.raises(Conflict, match="already Completed"):
            store.transition(run.id, to_state, "again")


def test_compare_and_set_names_the_current_state(store: Store) -> None:
    run = run_in(store, "Running")
    with pytest.raises(Conflict, match="is Running, not Pending"):
        store.transition(run.id, "Cancelling", "cancel", expect={"Pending"})
    assert store.transition(run.id, "Cancelling", "cancel", expect={"Pending", "Running"}).state == "Cancelling"


def test_unknown_run_state_and_field(store: Store) -> None:
    run = run_in(store, "Pending")
    with pytest.raises(NotFound):
        store.transition("f" * 32, "Running", "x")
    with pytest.raises(ValueError, match="unknown run state"):
        store.transition(run.id, "Done", "x")
    with pytest.raises(TypeError, match="deployment"):
        store.transition(run.id, "Running", "x", deployment="other")


def test_racing_transitions_have_one_winner(store: Store) -> None:
    run = run_in(store, "Running")
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def finish(target: str) -> None:
        barrier.wait(timeout=30)
        try:
            store.transition(run.id, target, "race", expect={"Running"})
            outcomes.append(target)
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=finish, args=(t,)) for t in ["Completed", "Failed", "Cancelling"] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes).count("conflict") == 5
    assert len(store.events(run.id)) == 4  # created, Pending, Running, the one winner


def test_implied_fields(store: Store, clock: FakeClock) -> None:
    run = run_in(store, "Pending", max_attempts=3, retry_delay_seconds=30)
    clock.advance(5)
    running = store.transition(run.id, "Running", "started", runner_ident="pid:42@1700000000")
    assert (running.start_time, running.runner_ident) == (clock.now, "pid:42@1700000000")
    assert running.state_reason == "started"
    first_start = running.start_time
    clock.advance(5)
    retry = store.transition(run.id, "Scheduled", "exit 1; retry 2 of 3", exit_code=1)
    assert (retry.attempt, retry.scheduled_time) == (2, clock.now + timedelta(seconds=30))
    assert (retry.worker, retry.runner_ident, retry.exit_code) == (None, None, 1)
    assert store.events(run.id)[-1].attempt == 2
    store.transition(run.id, "Pending", "claimed", worker="w2", lease_expires_at=clock.now)
    clock.advance(5)
    running = store.transition(run.id, "Running", "started again")
    assert running.start_time == first_start  # the first start; attempts are in the events
    done = store.transition(run.id, "Completed", "exit 0", exit_code=0, job={"command": ["true"]},
                            variables_patch=[{"op": "add", "path": "/env/A", "value": "1"}])
    assert (done.end_time, done.lease_expires_at, done.exit_code) == (clock.now, None, 0)
    assert done.job == {"command": ["true"]}
    assert done.variables_patch == [{"op": "add", "path": "/env/A", "value": "1"}]


def test_release_keeps_attempt_and_due_time(store: Store) -> None:
    run = run_in(store, "Pending")
    released = store.transition(run.id, "Scheduled", "worker shutting down")
    assert (released.attempt, released.scheduled_time, released.worker) == (1, run.scheduled_time, None)


def test_state_reason_override_and_event_reason(store: Store) -> None:
    run = run_in(store, "Running")
    failed = store.transition(run.id, "Failed", "exit 3", state_reason="exit 3: see logs")
    assert failed.state_reason == "exit 3: see logs"
    assert store.events(run.id)[-1].reason == "exit 3"


def test_events_cascade_with_their_run(store: Store) -> None:
    run = run_in(store, "Running")
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM runs WHERE id = :id"), {"id": run.id})
    assert store.events(run.id) == []


# -- leases ------------------------------------------------------------------------


def claimed_by(store: Store, worker: str, lease: datetime | None = None, then: str | None = None) -> Run:
    run = store.transition(run_in(store, "Scheduled").id, "Pending", "claimed", worker=worker, lease_expires_at=lease)
    return store.transition(run.id, then, then) if then else run


def test_renew_lease_returns_what_is_still_held(store: Store) -> None:
    mine, running = claimed_by(store, "w1", T0), claimed_by(store, "w1", then="Running")
    theirs, finished = claimed_by(store, "w2"), claimed_by(store, "w1", then="Failed")
    until = T0 + timedelta(seconds=30)
    held = store.renew_lease("w1", {mine.id, running.id, theirs.id, finished.id, "f" * 32}, until)
    assert held == {mine.id, running.id}
    assert store.get_run(mine.id).lease_expires_at == until
    assert store.get_run(theirs.id).lease_expires_at is None
    assert store.renew_lease("w1", set(), until) == set()


def test_expired_leases(store: Store) -> None:
    early = claimed_by(store, "w1", T0)
    late = claimed_by(store, "w1", T0 + timedelta(minutes=5))
    claimed_by(store, "w1")  # no lease: never expires
    claimed_by(store, "w1", T0, then="Failed")  # finished: its lease is cleared
    assert [r.id for r in store.expired_leases(T0 + timedelta(seconds=1))] == [early.id]
    assert [r.id for r in store.expired_leases(T0 + timedelta(hours=1))] == [early.id, late.id]


# -- schedule bookkeeping ----------------------------------------------------------------


def test_withdraw_future_runs_of_removed_schedules(store: Store, clock: FakeClock) -> None:
    now = T0
    kept = scheduled("etl", now + timedelta(hours=1), identity="keep")
    removed = [scheduled("etl", now + timedelta(hours=h), identity="gone") for h in (1, 2)]
    past_due = scheduled("etl", now - timedelta(minutes=1), identity="gone")
    other = scheduled("other", now + timedelta(hours=1), identity="gone")
    store.insert_scheduled_runs([kept, *removed, past_due, other])
    manual = store.create_run(new_run("etl", now + timedelta(hours=1)))
    # a due run that never started goes too: the spec that owed it is gone
    assert store.delete_future_scheduled("etl", {"keep"}, now) == 3
    by_key = {r.schedule_identity: r for r in store.list_runs(state="Cancelled")}
    assert set(by_key) == {"gone"}
    cancelled = store.list_runs(state="Cancelled")
    assert all(r.state_reason == "schedule removed or changed" and r.end_time == now for r in cancelled)
    assert all(r.idempotency_key is None for r in cancelled)
    assert store.events(cancelled[0].id)[-1].from_state == "Scheduled"
    assert store.get_run(manual.id).state == "Scheduled"
    assert store.get_run(past_due_id(store)).state == "Cancelled"
    assert len(store.list_runs(state="Scheduled")) == 3
    # The schedule comes back: its slots are owed again and can be inserted anew.
    assert store.insert_scheduled_runs(removed) == 2


def past_due_id(store: Store) -> str:
    return next(r.id for r in store.list_runs(state="Cancelled") if r.scheduled_time < T0)


def test_withdraw_everything_of_a_deleted_deployment(store: Store) -> None:
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(hours=h), identity=f"s{h % 2}") for h in range(1, 5)])
    assert store.delete_future_scheduled("etl", set(), T0) == 4
    assert store.list_runs(state="Scheduled") == []


def test_last_slot_follows_slots_not_retries(store: Store) -> None:
    assert store.last_slot("etl", "cron") is None
    retrying = {"max_attempts": 2, "retry_delay_seconds": 7200}
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(minutes=m), "cron", **retrying) for m in (0, 15)])
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(minutes=30), "cron", state="Missed")])
    assert store.last_slot("etl", "cron") == T0 + timedelta(minutes=30)
    first = store.list_runs(state="Scheduled")[-1]
    store.transition(first.id, "Pending", "c")
    store.transition(first.id, "Running", "s")
    retried = store.transition(first.id, "Scheduled", "retry")
    assert retried.scheduled_time > T0 + timedelta(hours=1)
    assert store.last_slot("etl", "cron") == T0 + timedelta(minutes=30)
    assert store.last_slot("etl", "other") is None


def test_last_slots_of_every_schedule(store: Store) -> None:
    every = [("etl", "a"), ("etl", "b"), ("report", "a"), ("report", "never run")]
    assert store.last_slots(every) == {}
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(minutes=m), "a") for m in (0, 15)])
    store.insert_scheduled_runs([scheduled("etl", T0, "b"), scheduled("report", T0 + timedelta(hours=1), "a")])
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(hours=5), "b")])
    store.create_run(new_run("etl", T0 + timedelta(days=1)))  # manual: no schedule
    b_first = next(r for r in store.list_runs(deployment="etl") if r.schedule_identity == "b" and r.slot_time == T0)
    store.transition(b_first.id, "Pending", "claimed")  # started: withdrawing leaves it alone
    store.delete_future_scheduled("etl", {"a"}, T0 + timedelta(hours=1))  # withdraws b's 5h slot
    assert store.last_slots(every) == {
        ("etl", "a"): T0 + timedelta(minutes=15), ("etl", "b"): T0, ("report", "a"): T0 + timedelta(hours=1),
    }
    assert store.last_slots([("etl", "a")]) == {("etl", "a"): T0 + timedelta(minutes=15)}
    assert store.last_slot("etl", "b") == T0


def test_next_due_time(store: Store) -> None:
    assert store.next_due_time() is None
    store.insert_scheduled_runs([scheduled("etl", T0 + timedelta(minutes=m)) for m in (5, 1, 9)])
    assert store.next_due_time("local") == T0 + timedelta(minutes=1)
    assert store.next_due_time("elsewhere") is None
