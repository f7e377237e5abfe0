"""The event feed behind ``GET /api/v1/events``, driven directly against a store.

``StoreEventSource`` must find every state change after it started (however
many runs were created and ended between two looks, and events whose
transactions commit out of id order) and nothing from before; ``EventFeed``
must give each reader its events once, in order, within its bounded buffer,
and a reader that reconnects from before the buffer the rest from the store. Also: FastAPI and
uvicorn stay inside ``orchestra.api``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from orchestra.api.app import create_app
from orchestra.api.feed import EventFeed, FeedEvent, StoreEventSource
from orchestra.api.server import ApiServer
from orchestra.store import CANCELLED, COMPLETED, PENDING, RUNNING, NewRun, Store, open_store
from orchestra.store.tables import run_events
from tests.api_fixtures import T0, TOKEN, LiveApi, api_factory_fixture, api_fixture  # noqa: F401
from tests.store_fixtures import _postgres_schema, postgres_base_url
from tests.test_api_streams import EventReader

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


def test_no_run_is_missed_however_many_were_created_and_ended_between_two_looks(store: Store) -> None:
    source = StoreEventSource(store, batch=50)
    long_running = _run(store)
    store.transition(long_running, PENDING, "claimed")
    source.poll()
    newer = [_run(store) for _ in range(300)]  # more than any "recent runs" window, and than a batch
    for run_id in newer:
        store.transition(run_id, CANCELLED, "not needed")
    store.transition(long_running, RUNNING, "started")
    store.transition(long_running, COMPLETED, "done")
    events = source.poll()
    changes = _changes(events)
    assert (long_running, "Running", "Completed") in changes
    assert {c[0] for c in changes if c[2] == "Cancelled"} == set(newer)
    assert [e.event.id for e in events] == sorted(e.event.id for e in events)
    assert {e.deployment for e in events} == {"d"}


def _insert_event(store: Store, run_id: str, event_id: int, to_state: str) -> None:
    """An event row with a chosen id. SQLite serializes writers, so two transactions cannot
    commit out of id order there as they do on PostgreSQL; writing the ids out of order
    reproduces what a reader then sees (the PostgreSQL test below does it for real)."""
    with store.engine.begin() as conn:
        conn.execute(sa.insert(run_events).values(id=event_id, run_id=run_id, time=T0, from_state=None,
                                                  to_state=to_state, reason="late commit", attempt=1))


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_event_committed_after_a_newer_one_is_still_delivered(store: Store) -> None:
    run_id = _run(store)
    source = StoreEventSource(store)
    base = store.change_marker()[1]
    _insert_event(store, run_id, base + 2, "Pending")  # the newer id commits first
    assert [e.event.id for e in source.poll()] == [base + 2]
    assert source.poll() == []
    _insert_event(store, run_id, base + 1, "Cancelled")  # the older one a moment later
    assert [e.event.id for e in source.poll()] == [base + 1]
    assert source.poll() == []


def test_a_gap_that_never_fills_is_given_up_after_the_grace(store: Store) -> None:
    run_id = _run(store)
    ticks = _Ticks()
    source = StoreEventSource(store, grace=5.0, monotonic=ticks)
    base = store.change_marker()[1]
    _insert_event(store, run_id, base + 2, "Pending")  # base + 1: a rolled-back insert, say
    assert [e.event.id for e in source.poll()] == [base + 2]
    ticks.now = 4.0
    _insert_event(store, run_id, base + 1, "Cancelled")
    assert [e.event.id for e in source.poll()] == [base + 1]  # within the grace: delivered
    _insert_event(store, run_id, base + 4, "Running")
    assert [e.event.id for e in source.poll()] == [base + 4]
    ticks.now = 10.0
    assert source.poll() == []  # base + 3 is given up: the source reads nothing behind its mark any more
    store.transition(run_id, CANCELLED, "done")
    assert [e.event.to_state for e in source.poll()] == ["Cancelled"]


def test_out_of_order_commits_on_postgresql_are_delivered(tmp_path: Path) -> None:
    url = postgres_base_url()  # only PostgreSQL commits concurrent transactions out of id order
    assert url is not None
    for db_url in _postgres_schema(url):
        with open_store(db_url) as store:
            run_id = _run(store)
            source = StoreEventSource(store)
            insert = sa.insert(run_events).values(run_id=run_id, time=T0, from_state=None, to_state="Pending",
                                                  reason="concurrent", attempt=1).returning(run_events.c.id)
            with store.engine.connect() as slow, store.engine.connect() as fast:
                slow_tx = slow.begin()
                older = slow.execute(insert).scalar_one()
                with fast.begin():
                    newer = fast.execute(insert).scalar_one()
                assert newer > older
                assert [e.event.id for e in source.poll()] == [newer]
                slow_tx.commit()
            assert [e.event.id for e in source.poll()] == [older]


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


def test_a_reader_resumes_after_its_exact_event_when_ids_arrived_out_of_order(store: Store) -> None:
    source = _Scripted()
    feed = EventFeed(source, interval=0)
    one, two, three = _events(store, 3)
    source.batches = [[one, three], [two]]  # two committed last
    feed.position_after(None)
    events, _ = feed.read(feed.position_after(three.event.id))
    assert events == [two]


def test_a_reader_from_before_the_buffer_gets_the_rest_from_the_store(store: Store) -> None:
    run_id = _run(store)
    store.transition(run_id, PENDING, "claimed")
    seen = store.change_marker()[1]
    store.transition(run_id, RUNNING, "started")
    missed = store.change_marker()[1]
    feed = EventFeed(StoreEventSource(store), interval=0)  # a restarted server: an empty buffer
    store.transition(run_id, COMPLETED, "done")
    backlog, position = feed.resume(seen)
    assert [e.event.id for e in backlog] == [missed]
    rest, _ = feed.read(position)
    assert [e.event.to_state for e in backlog + rest] == ["Running", "Completed"]
    assert feed.resume(None)[0] == []


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
            assert module.startswith(("orchestra/api/", "orchestra/ui/")), module  # the UI is a web layer too
        if "uvicorn" in imported:
            assert module == "orchestra/api/server.py", module


def test_a_client_reconnecting_to_a_restarted_server_gets_what_it_missed(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    seen = api.store.change_marker()[1]  # the client saw the run's creation, then lost the server
    api.store.transition(run_id, PENDING, "claimed")
    api.store.transition(run_id, CANCELLED, "cancelled while nobody listened")
    restarted = ApiServer(create_app(api.store, settings=api.settings), "127.0.0.1", 0)
    restarted.start()
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": str(seen)}
        with httpx.Client(base_url=restarted.url, headers=headers, timeout=10) as client, \
                client.stream("GET", "/api/v1/events") as response:
            reader = EventReader(response)
            missed = [reader.next()["data"] for _ in range(2)]
            assert [(e["runId"], e["to"]) for e in missed] == [(run_id, "Pending"), (run_id, "Cancelled")]
            assert reader.nothing_within(0.3)
    finally:
        restarted.stop()
