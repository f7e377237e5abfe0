"""The event feed behind ``GET /api/v1/events``, driven directly against a store.

``StoreEventSource`` must find every state change after it started (runs
created and ended between two looks, runs that closed and fell out of the
newest ones) and nothing from before; ``EventFeed`` must give each reader
its events once, in order, within its bounded buffer. Also: FastAPI and
uvicorn stay inside ``orchestra.api``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.api.feed import EventFeed, FeedEvent, StoreEventSource
from orchestra.store import CANCELLED, COMPLETED, PENDING, RUNNING, NewRun, Store, open_store
from tests.api_fixtures import T0

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'orchestra.db'}") as opened:
        yield opened


def _run(store: Store, deployment: str = "d") -> str:
    return store.create_run(NewRun(deployment=deployment, pool="p", scheduled_time=T0)).id


def _complete(store: Store, run_id: str) -> None:
    for state in (PENDING, RUNNING, COMPLETED):
        store.transition(run_id, state, f"to {state}")


def _changes(events: list[FeedEvent]) -> list[tuple[str, str | None, str]]:
    return [(e.event.run_id, e.event.from_state, e.event.to_state) for e in events]


def test_nothing_from_before_the_source_started(store: Store) -> None:
    old = _run(store)
    source = StoreEventSource(store)
    assert source.poll() == []
    store.transition(old, CANCELLED, "late")
    assert _changes(source.poll()) == [(old, "Scheduled", "Cancelled")]
    assert source.poll() == []


def test_a_run_created_and_ended_between_two_looks_is_seen_whole(store: Store) -> None:
    source = StoreEventSource(store)
    run_id = _run(store, "quick")
    _complete(store, run_id)
    events = source.poll()
    assert _changes(events) == [(run_id, None, "Scheduled"), (run_id, "Scheduled", "Pending"),
                                (run_id, "Pending", "Running"), (run_id, "Running", "Completed")]
    assert [e.event.id for e in events] == sorted(e.event.id for e in events)
    assert {e.deployment for e in events} == {"quick"}


def test_an_open_run_that_ends_after_newer_runs_pushed_it_out_is_still_seen(store: Store) -> None:
    source = StoreEventSource(store, recent=2)
    long_running = _run(store)
    store.transition(long_running, PENDING, "claimed")
    source.poll()
    newer = [_run(store) for _ in range(3)]
    for run_id in newer:
        store.transition(run_id, CANCELLED, "not needed")
    store.transition(long_running, RUNNING, "started")
    store.transition(long_running, COMPLETED, "done")
    changes = _changes(source.poll())
    assert (long_running, "Running", "Completed") in changes
    # The documented limit: of the runs created *and* ended between two looks, only the
    # newest ``recent`` are found (a store query "events after id" would lift it).
    assert {c[0] for c in changes if c[2] == "Cancelled"} == set(newer[1:])


def test_each_event_is_returned_once(store: Store) -> None:
    source = StoreEventSource(store)
    run_id = _run(store)
    first = source.poll()
    store.transition(run_id, PENDING, "claimed")
    second = source.poll()
    assert [e.event.to_state for e in first + second] == ["Scheduled", "Pending"]


class _Scripted:
    """A source that returns prepared batches, for the feed's own logic."""

    def __init__(self) -> None:
        self.batches: list[list[FeedEvent]] = []

    def poll(self) -> list[FeedEvent]:
        return self.batches.pop(0) if self.batches else []


def _events(store: Store, count: int) -> list[FeedEvent]:
    run_id = _run(store)
    store.transition(run_id, PENDING, "x")
    store.transition(run_id, RUNNING, "x")
    events = [FeedEvent(e, "d") for e in store.events(run_id)]
    assert len(events) >= count
    return events[:count]


def test_readers_keep_their_own_positions(store: Store) -> None:
    source = _Scripted()
    feed = EventFeed(source, interval=0)
    a = b = feed.position_after(None)
    source.batches = [_events(store, 2)]
    got_a, a = feed.read(a)
    got_b, b = feed.read(b)
    assert got_a == got_b and len(got_a) == 2
    assert feed.read(a) == ([], a)


def test_a_reader_resumes_after_an_event_id_within_the_buffer(store: Store) -> None:
    source = _Scripted()
    feed = EventFeed(source, interval=0, capacity=2)
    one, two, three = _events(store, 3)
    source.batches = [[one, two, three]]
    assert feed.position_after(None) == 3
    events, _ = feed.read(feed.position_after(two.event.id))
    assert events == [three]
    events, _ = feed.read(feed.position_after(one.event.id - 1))  # older than the buffer: from its start
    assert events == [two, three]
    assert feed.read(0)[0] == [two, three]  # a reader left behind by the bound goes on from the oldest kept


def test_fastapi_and_uvicorn_stay_in_the_api_package() -> None:
    for path in (REPO / "orchestra").rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        module = path.relative_to(REPO).as_posix()
        if imported & {"fastapi", "starlette"}:
            assert module.startswith("orchestra/api/"), module
        if "uvicorn" in imported:
            assert module == "orchestra/api/server.py", module
