"""Which daemons serve a store, and whether they are alive.

A daemon can die without a word (``kill -9``, its machine gone) or hang, and
its runs then sit still with nothing in the store saying why. So each daemon
process keeps a status document of its own (``daemon:HOST:PID:RANDOM``): what it
watches and runs, when it started, and when its loop last came round
(``seenAt``, rewritten every ``BEAT_EVERY`` seconds, from the loop itself so
that a loop that hangs stops it). A clean stop says so (``stoppedAt``).
``orchestra status`` and ``GET /api/v1/daemons`` read these documents and
tell a running daemon from a stopped one and from one that went quiet without
stopping. Documents of daemons gone for ``FORGET_AFTER`` are deleted by the
next daemon that starts, so restarts do not pile them up.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orchestra.store import Store

PREFIX = "daemon:"
BEAT_EVERY = 10.0  # seconds between two writes of a daemon's seenAt
QUIET_AFTER = timedelta(seconds=3 * BEAT_EVERY)  # not seen for longer: reported unresponsive
FORGET_AFTER = timedelta(days=1)


class Presence:
    """One daemon process's status document, written from its loop."""

    def __init__(self, store: Store, clock: Callable[[], datetime], facts: dict[str, Any]) -> None:
        """``facts``: what the daemon is (the paths it watches, the pools it runs)."""
        self._store = store
        self._clock = clock
        host = socket.gethostname()
        # Unique per process even where hosts share a name and pids repeat (containers: pid 1);
        # the key column holds 63 characters.
        self.key = f"{PREFIX}{host[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._document = {"host": host, "pid": os.getpid(), **facts, "startedAt": clock().isoformat()}
        self._next_beat = -float("inf")

    def beat(self) -> None:
        """Say the loop came round; writes at most every ``BEAT_EVERY`` seconds (the loop
        passes up to a thousand times a second in a burst)."""
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + BEAT_EVERY
        self._store.put_status(self.key, {**self._document, "seenAt": self._clock().isoformat(), "stoppedAt": None})

    def stopped(self) -> None:
        now = self._clock().isoformat()
        self._store.put_status(self.key, {**self._document, "seenAt": now, "stoppedAt": now})

    def forget_old(self) -> None:
        """Delete the documents of daemons neither seen nor stopped within ``FORGET_AFTER``."""
        cutoff = self._clock() - FORGET_AFTER
        old = [key for key, document in self._store.list_status(PREFIX).items()
               if key != self.key and _seen(document) < cutoff]
        self._store.delete_status(old)


def daemons(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every daemon's document with its ``state``: ``running``, ``stopped``, or
    ``unresponsive`` (not seen for ``QUIET_AFTER``: killed, frozen, or its host gone),
    the ones seen last first."""
    found = []
    for document in store.list_status(PREFIX).values():
        if document.get("stoppedAt"):
            state = "stopped"
        elif now - _seen(document) > QUIET_AFTER:
            state = "unresponsive"
        else:
            state = "running"
        found.append({**document, "state": state})
    return sorted(found, key=_seen, reverse=True)


def _seen(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(document["seenAt"])
