"""Run state changes as a feed that many event-stream clients read at once.

``GET /api/v1/events`` (``api.routes_events``) reads an ``EventFeed``: one
per app, polled at most once per interval however many clients listen,
keeping the last events in a bounded buffer so a client that reconnects
with ``Last-Event-ID`` gets what it missed while it was away.

``StoreEventSource`` finds new events with the store's public reads: the
change marker says whether anything happened (one cheap query); if so, the
runs that can have new events are the ones open at the last look, the ones
open now and the newest ones (a run created and finished between two looks).
Each run's events are read once it changed. A store query "events after
id N" would replace all of this with one statement; until the store has one,
this costs one ``events`` read per changed run, and a run that was created
and ended between two looks while more than ``RECENT`` runs were created is
not seen (its state is, through ``GET /runs``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from orchestra.store import STATES, TERMINAL, Run, RunEvent, Store

OPEN_STATES = frozenset(STATES) - TERMINAL
RECENT = 200
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
        """Events not returned before, oldest first."""
        ...


def _fingerprint(run: Run) -> tuple[Any, ...]:
    """Changes whenever the run gets a new event (a state, an attempt, a reason)."""
    return run.state, run.attempt, run.state_reason, run.worker, run.start_time, run.end_time, run.scheduled_time


class StoreEventSource:
    """Events not returned before, found through the public ``Store`` reads."""

    def __init__(self, store: Store, *, recent: int = RECENT) -> None:
        self._store = store
        self._recent = recent
        self._floor = store.change_marker()[1]  # events from before the server started are not replayed
        self._marker = self._floor
        self._open: dict[str, Run] = {}  # runs open at the last look
        self._seen: dict[str, tuple[Any, ...]] = {}  # run id -> fingerprint at the last look
        self._delivered: dict[str, int] = {}  # run id -> its last event id returned

    def poll(self) -> list[FeedEvent]:
        marker = self._store.change_marker()[1]
        if marker == self._marker:
            return []
        self._marker = marker
        now_open = {r.id: r for r in self._store.runs_in_states(OPEN_STATES)}
        looked = {r.id: r for r in self._store.list_runs(limit=self._recent)} | now_open
        changed = [r for r in looked.values() if self._seen.get(r.id) != _fingerprint(r)]
        closed = [r for rid, r in self._open.items() if rid not in looked]  # ended, and not among the newest
        found = [item for run in changed + closed for item in self._new_events(run)]
        self._forget_all_but(looked)
        self._open = now_open
        return sorted(found, key=lambda item: item.event.id)

    def _new_events(self, run: Run) -> list[FeedEvent]:
        after = self._delivered.get(run.id, self._floor)
        fresh = [FeedEvent(e, run.deployment) for e in self._store.events(run.id) if e.id > after]
        if fresh:
            self._delivered[run.id] = fresh[-1].event.id
        return fresh

    def _forget_all_but(self, looked: dict[str, Run]) -> None:
        self._seen = {rid: _fingerprint(r) for rid, r in looked.items()}
        self._delivered = {rid: eid for rid, eid in self._delivered.items() if rid in looked}


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
        """Where a reader starts: just after ``event_id`` if it is still known, else at the end."""
        with self._lock:
            self._refresh()
            end = self._dropped + len(self._buffer)
            if event_id is None:
                return end
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
