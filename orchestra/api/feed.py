"""Run state changes as a feed that many event-stream clients read at once.

``GET /api/v1/events`` (``api.routes_events``) reads an ``EventFeed``: one
per app, polled at most once per interval however many clients listen,
keeping the last events in a bounded buffer so a client that reconnects
with ``Last-Event-ID`` gets what it missed while it was away; one that was
away longer than the buffer reaches (or across a server restart) gets the
rest from the store (``EventFeed.resume``).

``StoreEventSource`` reads new events with one statement,
``Store.events_after(high-water mark)``, in id order. Ids are handed out
when an event is inserted but become visible when its transaction commits:
on PostgreSQL two concurrent transactions can commit out of id order, so a
reader that only moved its mark forward could pass over an id that commits
a moment later. The source therefore remembers the ids below its mark it
has not seen (gaps) and re-reads from the oldest one on every poll until
the gap fills or is older than ``GRACE`` seconds (a rolled-back insert
leaves a gap that never fills; the store's write transactions last
milliseconds, so a commit later than that is not expected). Why not a
commit-ordered counter instead: it would make every state change of every
run update one shared row, serializing all writers on PostgreSQL for the
sake of one reader. On SQLite writes are serialized and an id is reused
after a rollback, so gaps do not occur and a poll with nothing new costs
one ``change_marker`` read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from orchestra.store import RunEvent, Store

BATCH = 1000  # events read per statement
GRACE = 5.0  # seconds a missing id is waited for
MAX_GAPS = 10_000
CAPACITY = 10_000


@dataclass(frozen=True)
class FeedEvent:
    event: RunEvent
    deployment: str

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {"id": e.id, "runId": e.run_id, "deployment": self.deployment, "from": e.from_state,
                "to": e.to_state, "reason": e.reason, "time": e.time.isoformat(), "attempt": e.attempt}


class EventSource(Protocol):
    def poll(self) -> list[FeedEvent]:
        """Events not returned before, in the order they became visible."""
        ...

    def replay(self, after_id: int, limit: int) -> list[FeedEvent]:
        """Stored events with an id above ``after_id`` that ``poll`` has returned or
        started after, oldest first: what a client reconnecting from long ago missed."""
        ...


class StoreEventSource:
    """Every event committed after the source started, once, through ``Store.events_after``."""

    def __init__(self, store: Store, *, batch: int = BATCH, grace: float = GRACE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._batch = batch
        self._grace = grace
        self._monotonic = monotonic
        self._high = store.change_marker()[1]  # events up to here: returned, or from before the start
        self._gaps: dict[int, float] = {}  # ids below the mark not seen yet -> when first missed

    def poll(self) -> list[FeedEvent]:
        now = self._monotonic()
        self._gaps = {i: t for i, t in self._gaps.items() if now - t < self._grace}
        if not self._gaps and self._store.change_marker()[1] <= self._high:
            return []
        fresh = [item for item in self._read_from(min(self._gaps, default=self._high + 1) - 1)
                 if item.event.id > self._high or item.event.id in self._gaps]
        self._advance([item.event.id for item in fresh], now)
        return fresh

    def replay(self, after_id: int, limit: int) -> list[FeedEvent]:
        rows = self._store.events_after(after_id, limit)
        return [FeedEvent(event, deployment) for event, deployment in rows
                if event.id <= self._high and event.id not in self._gaps]  # the rest comes through poll

    def _read_from(self, after: int) -> list[FeedEvent]:
        found: list[FeedEvent] = []
        while True:
            rows = self._store.events_after(after, self._batch)
            found += [FeedEvent(event, deployment) for event, deployment in rows]
            if len(rows) < self._batch:
                return found
            after = rows[-1][0].id

    def _advance(self, ids: list[int], now: float) -> None:
        """Move the mark to the newest id seen; ids skipped on the way become gaps."""
        seen = set(ids)
        for event_id in seen:
            self._gaps.pop(event_id, None)
        high = max(seen, default=self._high)
        for missing in range(max(self._high + 1, high - MAX_GAPS), high):
            if missing not in seen:
                self._gaps[missing] = now
        self._high = max(high, self._high)


class EventFeed:
    """A bounded, shared buffer of ``FeedEvent``; readers keep their own position in it."""

    def __init__(self, source: EventSource, *, interval: float, capacity: int = CAPACITY) -> None:
        self._source = source
        self._interval = interval
        self._buffer: deque[FeedEvent] = deque(maxlen=capacity)
        self._dropped = 0  # events pushed out of the buffer: position of buffer[0]
        self._polled_at = float("-inf")
        self._lock = threading.Lock()

    def read(self, position: int) -> tuple[list[FeedEvent], int]:
        """Events from ``position`` on (or from the oldest kept), and the position after them."""
        with self._lock:
            self._refresh()
            start = max(position - self._dropped, 0)
            return list(self._buffer)[start:], self._dropped + len(self._buffer)

    def position_after(self, event_id: int | None) -> int:
        """Where a reader starts: just after ``event_id`` if it is in the buffer, else at the
        first newer one (events arrive in commit order, not always in id order)."""
        with self._lock:
            self._refresh()
            return self._position_after(event_id)

    def resume(self, event_id: int | None) -> tuple[list[FeedEvent], int]:
        """What a reconnecting reader missed: events older than the buffer from the store
        (bounded by the capacity), then its position in the buffer."""
        with self._lock:
            self._refresh()
            position = self._position_after(event_id)
            oldest = min((item.event.id for item in self._buffer), default=None)
            if event_id is None or (oldest is not None and event_id >= oldest):
                return [], position
            buffered = {item.event.id for item in self._buffer}
            backlog = [item for item in self._source.replay(event_id, self._buffer.maxlen or CAPACITY)
                       if item.event.id not in buffered]
            return backlog, self._dropped

    def _position_after(self, event_id: int | None) -> int:
        end = self._dropped + len(self._buffer)
        if event_id is None:
            return end
        exact = next((i for i, item in enumerate(self._buffer) if item.event.id == event_id), None)
        if exact is not None:
            return self._dropped + exact + 1
        index = next((i for i, item in enumerate(self._buffer) if item.event.id > event_id), None)
        return end if index is None else self._dropped + index

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._polled_at < self._interval:
            return
        self._polled_at = now
        fresh = self._source.poll()
        overflow = max(0, len(self._buffer) + len(fresh) - (self._buffer.maxlen or 0))
        self._dropped += overflow
        self._buffer.extend(fresh)
