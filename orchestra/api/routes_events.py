"""``GET /api/v1/events``: run state changes as server-sent events.

Each event is one state change (``event: run``, ``id:`` the store's event
id, ``data:`` JSON with the run id, deployment, from, to, reason, time and
attempt). A client that reconnects sends ``Last-Event-ID`` (browsers do it
by themselves) and gets what it missed: from the feed's buffer, and what is
older than the buffer from the store. The stream ends when the client
leaves or the server stops; FastAPI sends a keep-alive comment after 15 s of silence. The polling is
shared by all clients (``api.feed.EventFeed``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from orchestra.api.errors import INVALID
from orchestra.api.feed import EventFeed, FeedEvent
from orchestra.api.schemas import RunStateEvent

RETRY_MS = 2000  # how long a disconnected browser waits before reconnecting


def events_router(feed: EventFeed, *, interval: float, closing: threading.Event) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["events"])

    def starting_place(last_event_id: Annotated[int | None, Header(description="Resume after this event id.")] = None,
                       ) -> tuple[list[FeedEvent], int]:
        """Where this reader starts, fixed before the response begins: a browser's
        EventSource opens on the response headers, and a page that looks again on
        ``open`` must then get every change after what it sees (a place taken after
        the headers would pass over a change made in between)."""
        return feed.resume(last_event_id)

    @router.get("/events", response_class=EventSourceResponse, responses=INVALID,
                summary="Run state changes as they happen (text/event-stream)")
    async def events(
        deployment: str | None = None,
        place: tuple[list[FeedEvent], int] = Depends(starting_place),  # a local function: not in Annotated
    ) -> AsyncIterable[RunStateEvent]:
        # The annotation gives OpenAPI the schema of each event's data; the items are
        # ServerSentEvents because each carries its id and name (FastAPI sends them as they are).
        backlog, position = place
        yield ServerSentEvent(comment="orchestra run events", retry=RETRY_MS)  # type: ignore[misc]
        for item in backlog:  # missed while away longer than the feed's buffer reaches
            if deployment is None or item.deployment == deployment:
                yield ServerSentEvent(data=item.to_json(), id=str(item.event.id), event="run")  # type: ignore[misc]
        while not closing.is_set():
            items, position = await to_thread.run_sync(feed.read, position)
            for item in items:
                if deployment is None or item.deployment == deployment:
                    yield ServerSentEvent(data=item.to_json(), id=str(item.event.id),  # type: ignore[misc]
                                          event="run")
            await asyncio.sleep(interval)

    return router
