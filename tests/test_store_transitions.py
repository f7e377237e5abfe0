"""``Store.transition_many``: many compare-and-set transitions in one transaction.

The contract suite of the batch: the same guards as ``transition`` (the
table, terminal states, ``expect``, ``match``), each answered per request
without stopping the others, every change with its event, a fixed number
of statements whatever the batch size, and racing batches that neither
deadlock nor let two writers win. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from store_fixtures import FakeClock, clock_fixture, db_url_fixture, new_run, store_fixture  # noqa: F401

from orchestra.errors import Conflict, NotFound
from orchestra.store import Run, Store, TransitionRequest, open_store

PATHS = {"Pending": ["Pending"], "Running": ["Pending", "Running"], "Completed": ["Pending", "Running", "Completed"]}


def run_in(store: Store, state: str, **kw: Any) -> Run:
    run = store.create_run(new_run(**kw))
    for step in PATHS.get(state, []):
        run = store.transition(run.id, step, f"to {step}", **({"worker": "w1"} if step == "Pending" else {}))
    assert run.state == state
    return run


def request(run: Run, to_state: str, reason: str = "why", **kw: Any) -> TransitionRequest:
    return TransitionRequest(run.id, to_state, reason, **kw)


def reasons(store: Store, run: Run) -> list[tuple[str | None, str, str]]:
    return [(e.from_state, e.to_state, e.reason) for e in store.events(run.id)]


# -- guards, one answer per request ---------------------------------------------------------


def test_each_guard_answers_its_own_request_and_the_others_apply(store: Store) -> None:
    running, done, pending, other, free = (run_in(store, s) for s in
                                           ("Running", "Completed", "Pending", "Running", "Running"))
    results = store.transition_many([
        request(running, "Completed", "exit code 0", fields={"exit_code": 0}),
        request(done, "Failed", "again"),                                  # terminal
        request(pending, "Completed", "too early"),                        # not in the table
        request(other, "Failed", "stale", expect={"Pending"}),             # expect
        request(free, "Failed", "not mine", match={"worker": "w2"}),       # match
        TransitionRequest("f" * 32, "Failed", "ghost"),                    # no such run
    ])
    assert isinstance(results[0], Run) and (results[0].state, results[0].exit_code) == ("Completed", 0)
    assert [type(r) for r in results[1:]] == [Conflict, Conflict, Conflict, Conflict, NotFound]
    assert "already Completed" in str(results[1])
    assert "is Pending and cannot become Completed" in str(results[2])
    assert "is Running, not Pending" in str(results[3])
    assert "has worker 'w1', not 'w2'" in str(results[4])
    assert store.get_run(running.id) == results[0]
    for unchanged in (done, pending, other, free):
        assert store.get_run(unchanged.id) == unchanged
        assert reasons(store, unchanged)[-1][2] != "again"
    assert reasons(store, running)[-1] == ("Running", "Completed", "exit code 0")


def test_match_on_several_fields(store: Store) -> None:
    run = run_in(store, "Running")
    with pytest.raises(Conflict, match="has attempt 1, not 2"):
        store.transition(run.id, "Failed", "x", match={"worker": "w1", "attempt": 2})
    moved = store.transition(run.id, "Failed", "exit code 1", match={"worker": "w1", "attempt": 1})
    assert moved.state == "Failed"


def test_malformed_requests_raise_before_anything_changes(store: Store) -> None:
    run = run_in(store, "Running")
    bad = [
        (request(run, "Done"), ValueError, "unknown run state"),
        (request(run, "Failed", fields={"deployment": "x"}), TypeError, "cannot set"),
        (request(run, "Failed", match={"state": "Running"}), TypeError, "cannot match on"),
    ]
    for malformed, error, words in bad:
        with pytest.raises(error, match=words):
            store.transition_many([request(run, "Completed"), malformed])
    assert store.get_run(run.id) == run
    assert store.transition_many([]) == []


# -- what a change writes -------------------------------------------------------------------


def test_requests_for_one_run_chain_with_an_event_each(store: Store, clock: FakeClock) -> None:
    run = run_in(store, "Pending", max_attempts=2, retry_delay_seconds=30)
    results = store.transition_many([
        request(run, "Running", "started", expect={"Pending"}, fields={"runner_ident": "pid:1"}),
        request(run, "Scheduled", "exit code 1; retry 2/2 in 30s", expect={"Running"}, fields={"exit_code": 1}),
        request(run, "Pending", "claimed again", expect={"Scheduled"}, fields={"worker": "w2"}),
    ])
    assert [r.state for r in results if isinstance(r, Run)] == ["Running", "Scheduled", "Pending"]
    final = store.get_run(run.id)
    assert final == results[-1]
    assert (final.attempt, final.worker, final.scheduled_time) == (2, "w2", clock.now + timedelta(seconds=30))
    assert reasons(store, run)[-3:] == [
        ("Pending", "Running", "started"),
        ("Running", "Scheduled", "exit code 1; retry 2/2 in 30s"),
        ("Scheduled", "Pending", "claimed again"),
    ]
    assert [e.attempt for e in store.events(run.id)][-3:] == [1, 2, 2]


def test_implied_fields_and_returned_runs_equal_what_is_stored(store: Store, clock: FakeClock) -> None:
    runs = [run_in(store, "Running") for _ in range(3)]
    berlin = (clock.now + timedelta(seconds=5)).astimezone(ZoneInfo("Europe/Berlin"))
    results = store.transition_many([
        request(runs[0], "Completed", "exit code 0", fields={"exit_code": 0, "end_time": berlin}),
        request(runs[1], "Crashed", "worker gone"),
        request(runs[2], "Cancelling", "cancel requested", fields={"job": {"command": ["true"], "env": {}}}),
    ])
    assert results == [store.get_run(run.id) for run in runs]
    done, crashed, cancelling = (r for r in results if isinstance(r, Run))
    assert (done.end_time, done.end_time.utcoffset(), done.lease_expires_at) == (berlin, timedelta(0), None)
    assert (crashed.end_time, crashed.state_reason) == (clock.now, "worker gone")
    assert (cancelling.end_time, cancelling.job) == (None, {"command": ["true"], "env": {}})


def test_naive_times_are_refused_and_nothing_is_written(store: Store) -> None:
    run = run_in(store, "Running")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.transition_many([request(run, "Completed", fields={"end_time": run.created_at.replace(tzinfo=None)})])
    assert store.get_run(run.id) == run


# -- one transaction, a fixed number of statements ------------------------------------------


def statements_and_commits(store: Store) -> tuple[list[str], list[int]]:
    statements: list[str] = []
    commits: list[int] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    sa.event.listen(store.engine, "commit", lambda *a: commits.append(1))
    return statements, commits


@pytest.mark.parametrize("size", [1, 25])
def test_a_batch_is_one_transaction_of_a_fixed_number_of_statements(store: Store, size: int) -> None:
    runs = [run_in(store, "Running") for _ in range(size)]
    statements, commits = statements_and_commits(store)
    results = store.transition_many([request(run, "Completed", "exit code 0", fields={"exit_code": 0})
                                     for run in runs])
    assert all(isinstance(r, Run) for r in results)
    assert len(commits) == 1
    work = [s for s in statements if not s.startswith("BEGIN")]
    # lock and read, update, insert the events
    assert [s.split()[0] for s in work] == ["SELECT", "UPDATE", "INSERT"]
    assert all(len(store.events(run.id)) == 4 for run in runs)


def test_a_batch_that_changes_nothing_writes_nothing(store: Store) -> None:
    run = run_in(store, "Completed")
    statements, _ = statements_and_commits(store)
    assert isinstance(store.transition_many([request(run, "Failed")])[0], Conflict)
    assert [s.split()[0] for s in statements if not s.startswith("BEGIN")] == ["SELECT"]


# -- racing batches ---------------------------------------------------------------------------


def test_racing_batches_over_the_same_runs_have_one_winner_per_run(db_url: str) -> None:
    """Four threads, each with its own store, end the same runs in different orders:
    no deadlock, and every run is ended exactly once."""
    with open_store(db_url) as seeding:
        ids = [run_in(seeding, "Running").id for _ in range(12)]
    won: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def end_all(seed: int) -> None:
        order = ids[:]
        random.Random(seed).shuffle(order)
        try:
            with open_store(db_url) as store:
                barrier.wait(timeout=30)
                results = store.transition_many([TransitionRequest(i, "Completed", f"by {seed}", {"Running"})
                                                 for i in order])
                won.extend(r.id for r in results if isinstance(r, Run))
        except BaseException as exc:  # reported below, never hangs the test
            errors.append(exc)

    threads = [threading.Thread(target=end_all, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(won) == sorted(ids)
    with open_store(db_url) as store:
        for run_id in ids:
            assert [e.to_state for e in store.events(run_id)].count("Completed") == 1


# -- adoption (``take_over``) ------------------------------------------------------------------


def test_take_over_of_a_pending_run_whose_job_started_unrecorded(store: Store, clock: FakeClock) -> None:
    """The run becomes Running under the new worker, with the job's ident and start time, once:
    a second daemon adopting it too (or a run already recorded) gets None."""
    pending, running = run_in(store, "Pending"), run_in(store, "Running")
    started = clock.now - timedelta(seconds=5)
    adopt = dict(from_worker="w1", attempt=1, worker="w2", lease_until=clock.now + timedelta(seconds=30),
                 reason="adopted by w2 (worker w1 gone)", runner_ident="docker:abc", start_time=started)
    taken = store.take_over(pending.id, **adopt)
    assert taken is not None and taken == store.get_run(pending.id)
    assert (taken.state, taken.worker, taken.runner_ident, taken.start_time) == ("Running", "w2", "docker:abc", started)
    assert reasons(store, taken)[-1] == ("Pending", "Running", "adopted by w2 (worker w1 gone)")
    assert store.take_over(pending.id, **{**adopt, "from_worker": "w2"}) is None  # not Pending any more
    assert store.take_over(running.id, **adopt) is None  # its start was recorded: adopt it by its ident
    assert store.get_run(running.id) == running
