"""Logs (paged and followed) and the server-sent run events, over real HTTP.

Runs change state through the store, as a worker would change them, and
their log files are written where the runners write them; the tests read
what the API sends back. Every wait is bounded.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from orchestra.api.feed import EventFeed
from orchestra.api.routes_logs import decode_page
from orchestra.store import CANCELLED, COMPLETED, PENDING, RUNNING
from tests.api_fixtures import LiveApi, api_factory_fixture, api_fixture  # noqa: F401

TEXT = "héllo wörld ✓\nline two — done\n"


# -- logs: pages ------------------------------------------------------------------------


def test_decode_page_leaves_an_incomplete_character_for_the_next_page() -> None:
    data = "a✓".encode()  # ✓ is three bytes
    assert decode_page(data[:2], final=False) == ("a", 1)
    assert decode_page(data, final=False) == ("a✓", 4)
    assert decode_page(data[:2], final=True) == ("a\ufffd", 2)
    assert decode_page(data[1:2], final=False) == ("\ufffd", 1)  # less than a character: advance anyway


def test_logs_read_in_pages_concatenate_to_the_exact_text(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    api.log_path(run_id).parent.mkdir(parents=True)
    api.log_path(run_id).write_bytes(TEXT.encode())
    texts, offset = [], 0
    for _ in range(100):  # bounded: 5-byte pages of a 40-byte log
        page = api.client.get(f"/api/v1/runs/{run_id}/logs?offset={offset}&limit=5").json()
        assert page["runId"] == run_id and page["offset"] == offset and page["state"] == "Scheduled"
        texts.append(page["text"])
        offset = page["nextOffset"]
        if page["eof"]:
            break
    assert "".join(texts) == TEXT and offset == len(TEXT.encode())
    whole = api.client.get(f"/api/v1/runs/{run_id[:10]}/logs").json()
    assert (whole["text"], whole["eof"]) == (TEXT, True)


def test_a_run_without_output_yet_has_an_empty_log(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    page = api.client.get(f"/api/v1/runs/{run_id}/logs?offset=7").json()
    assert (page["text"], page["nextOffset"], page["eof"]) == ("", 7, True)


@pytest.mark.parametrize("query", ["offset=-1", "limit=0", "limit=1048577"])
def test_log_paging_is_bounded(api: LiveApi, query: str) -> None:
    run_id = api.create_run()["id"]
    assert api.client.get(f"/api/v1/runs/{run_id}/logs?{query}").status_code == 422


# -- logs: stream -----------------------------------------------------------------------


def _start(api: LiveApi, run_id: str) -> None:
    api.store.transition(run_id, PENDING, "claimed")
    api.store.transition(run_id, RUNNING, "started")


def _collect(response: httpx.Response, into: queue.Queue[bytes | None]) -> None:
    for chunk in response.iter_bytes():
        into.put(chunk)
    into.put(None)


def test_the_log_stream_follows_output_until_the_run_ends(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    _start(api, run_id)
    path = api.log_path(run_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"first\n")
    chunks: queue.Queue[bytes | None] = queue.Queue()
    with api.client.stream("GET", f"/api/v1/runs/{run_id}/logs/stream", timeout=10) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        reader = threading.Thread(target=_collect, args=(response, chunks), daemon=True)
        reader.start()
        assert chunks.get(timeout=5) == b"first\n"
        with path.open("ab") as log:
            log.write(b"second\n")
        assert chunks.get(timeout=5) == b"second\n"
        with path.open("ab") as log:
            log.write(b"last words\n")  # written just before the end: must not be lost
        api.store.transition(run_id, COMPLETED, "exit 0")
        rest = b"".join(iter(lambda: chunks.get(timeout=5), None))
        reader.join(timeout=5)
    assert rest == b"last words\n"


def test_the_log_stream_of_an_ended_run_returns_what_is_there(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    api.store.transition(run_id, CANCELLED, "not needed")
    api.log_path(run_id).parent.mkdir(parents=True)
    api.log_path(run_id).write_bytes(TEXT.encode())
    response = api.client.get(f"/api/v1/runs/{run_id}/logs/stream?offset=6")
    assert response.content == TEXT.encode()[6:]


def test_the_log_stream_of_an_unknown_run_is_404(api: LiveApi) -> None:
    response = api.client.get("/api/v1/runs/0123456789abcdef/logs/stream")
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"


# -- server-sent events -----------------------------------------------------------------


class EventReader:
    """Parses an SSE response in a thread; ``next()`` waits (bounded) for the next event."""

    def __init__(self, response: httpx.Response) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.subscribed = threading.Event()  # the opening comment came: later changes will be sent
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: httpx.Response) -> None:
        fields: dict[str, Any] = {}
        try:
            for line in response.iter_lines():
                if not line:
                    if "data" in fields:
                        self.events.put({**fields, "data": json.loads(fields["data"])})
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                    self.subscribed.set()
                else:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
        except httpx.HTTPError:
            return  # the test closed the stream

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.events.get(timeout=timeout)

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@contextmanager
def _events(api: LiveApi, **headers: str) -> Iterator[tuple[httpx.Response, EventReader]]:
    with api.client.stream("GET", "/api/v1/events", headers=headers, timeout=10) as response:
        reader = EventReader(response)
        assert reader.subscribed.wait(timeout=5)
        yield response, reader


def test_events_deliver_a_state_change_made_through_the_store(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    with _events(api) as (response, reader):
        assert response.headers["content-type"].startswith("text/event-stream")
        api.store.transition(run_id, CANCELLED, "cancelled by a test")
        event = reader.next()
        assert event["event"] == "run"
        data = event["data"]
        assert int(event["id"]) == data["id"]
        assert (data["runId"], data["deployment"], data["from"], data["to"], data["reason"], data["attempt"]) == (
            run_id, "hello", "Scheduled", "Cancelled", "cancelled by a test", 1)
        assert data["time"].endswith("+00:00")


def test_events_include_new_runs_and_follow_a_run_through_its_states(api: LiveApi) -> None:
    with _events(api) as (_, reader):
        run_id = api.create_run()["id"]
        assert (reader.next()["data"]["to"], ) == ("Scheduled",)
        _start(api, run_id)
        api.store.transition(run_id, COMPLETED, "exit 0")
        states = [reader.next()["data"]["to"] for _ in range(3)]
        assert states == ["Pending", "Running", "Completed"]


def test_events_resume_after_last_event_id(api: LiveApi) -> None:
    first, second = api.create_run()["id"], api.create_run()["id"]
    with _events(api) as (_, reader):
        api.store.transition(first, CANCELLED, "one")
        seen = reader.next()
    api.store.transition(second, CANCELLED, "two")  # while nobody listens
    with _events(api, **{"Last-Event-ID": seen["id"]}) as (_, reader):
        missed = reader.next()
        assert (missed["data"]["runId"], missed["data"]["reason"]) == (second, "two")
        assert int(missed["id"]) > int(seen["id"])
        assert reader.nothing_within(0.3)


def test_a_change_made_once_the_headers_arrive_is_sent(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A browser's EventSource is open when the headers arrive, and the UI then looks
    again: a change made from that moment on must come as an event. A slow start
    (a busy store) widens the window the stream once passed over."""
    run_id = api.create_run()["id"]
    resume = EventFeed.resume

    def slow_resume(feed: EventFeed, event_id: int | None) -> tuple[list[Any], int]:
        time.sleep(0.5)
        return resume(feed, event_id)

    monkeypatch.setattr(EventFeed, "resume", slow_resume)
    with api.client.stream("GET", "/api/v1/events", timeout=10) as response:
        api.store.transition(run_id, CANCELLED, "right after the headers")  # not waiting for the first comment
        reader = EventReader(response)
        assert reader.next()["data"]["reason"] == "right after the headers"


def test_events_filter_by_deployment(api: LiveApi) -> None:
    hello, etl = api.create_run()["id"], api.create_run("etl-nightly")["id"]
    with api.client.stream("GET", "/api/v1/events?deployment=etl-nightly", timeout=10) as response:
        reader = EventReader(response)
        assert reader.subscribed.wait(timeout=5)
        api.store.transition(hello, CANCELLED, "h")
        api.store.transition(etl, CANCELLED, "e")
        assert reader.next()["data"]["runId"] == etl
        assert reader.nothing_within(0.3)


def test_a_new_listener_gets_only_new_events(api: LiveApi) -> None:
    api.create_run()
    with _events(api) as (_, reader):
        assert reader.nothing_within(0.3)
        assert reader.comments[:1] == [": orchestra run events"]


def test_stopping_the_server_ends_open_streams(api_factory: Any) -> None:
    api = api_factory()
    run_id = api.create_run()["id"]
    _start(api, run_id)
    with ExitStack() as stack:
        streams = [stack.enter_context(api.client.stream("GET", path, timeout=10))
                   for path in ("/api/v1/events", f"/api/v1/runs/{run_id}/logs/stream")]
        done: queue.Queue[bytes | None] = queue.Queue()
        readers = [threading.Thread(target=_collect, args=(s, done), daemon=True) for s in streams]
        for reader in readers:
            reader.start()
        api.server.stop()
        for reader in readers:
            reader.join(timeout=5)
            assert not reader.is_alive()
