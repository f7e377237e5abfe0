"""Which daemons serve a store, and whether they are alive.

A daemon can die without a word (``kill -9``, its machine gone) or hang, and
its runs then sit still with nothing in the store saying why. So each daemon
process keeps a status document of its own (``daemon:HOST:PID:RANDOM``): what it
watches and runs, when it started, and when its loop last came round
(``seenAt``, rewritten every ``BEAT_EVERY`` seconds, from the loop itself so
that a loop that hangs stops it). A clean stop says so (``stoppedAt``); a daemon
that finds, at its start, that an earlier one on its host is no longer there
says so for it (``goneAt``).
``orchestra status`` and ``GET /api/v1/daemons`` read these documents and
tell a running daemon from a stopped one and from one that went quiet without
stopping. Documents of daemons gone for ``FORGET_AFTER`` are deleted by the
next daemon that starts, so restarts do not pile them up.

Remote workers (``orchestra worker``) talk to a daemon's API, never to the
store, so the API keeps their documents (``worker:HASH``, ``WorkerRoster``):
every request a worker makes says it is alive, and its claims say which pools
it serves. ``serving`` answers the question behind a run that waits "ready":
does anyone serve its pool at all?
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orchestra.store import Store
from orchestra.workers.identity import pid_exists

PREFIX = "daemon:"
WORKER_PREFIX = "worker:"
BEAT_EVERY = 10.0  # seconds between two writes of a daemon's seenAt
QUIET_AFTER = timedelta(seconds=3 * BEAT_EVERY)  # not seen for longer: reported unresponsive
FORGET_AFTER = timedelta(days=1)
LOOP_STALLED = 60.0  # seconds without a pass of a loop before health checks fail (daemon and worker)


class Presence:
    """One daemon process's status document, written from its loop."""

    def __init__(self, store: Store, clock: Callable[[], datetime], facts: dict[str, Any],
                 news: Callable[[], dict[str, Any]] = dict) -> None:
        """``facts``: what the daemon is (the paths it watches, the pools it runs); ``news``:
        what it says at each write (the pools whose runner it cannot reach)."""
        self._store = store
        self._clock = clock
        self._news = news
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
        self._store.put_status(self.key, {**self._document, **self._news(), "seenAt": self._clock().isoformat(),
                                          "stoppedAt": None})

    def news(self) -> None:
        """What the daemon says changed: the next ``beat`` writes at once."""
        self._next_beat = -float("inf")

    def stopped(self) -> None:
        now = self._clock().isoformat()
        self._store.put_status(self.key, {**self._document, "seenAt": now, "stoppedAt": now, "unreachable": []})

    def tidy(self) -> None:
        """At start: delete the documents of daemons and workers gone for ``FORGET_AFTER``,
        and mark ``gone`` those of earlier daemons on this host whose process no longer
        exists (killed outright, then restarted: the usual case, which would otherwise
        read as unresponsive for a day)."""
        cutoff = self._clock() - FORGET_AFTER
        documents = {**self._store.list_status(PREFIX), **self._store.list_status(WORKER_PREFIX)}
        self._store.delete_status([key for key, document in documents.items()
                                   if key != self.key and _seen(document) < cutoff])
        for key, document in documents.items():
            if (key.startswith(PREFIX) and key != self.key and _seen(document) >= cutoff
                    and not document.get("stoppedAt") and not document.get("goneAt")
                    and document.get("host") == self._document["host"] and not _alive(document["pid"])):
                self._store.put_status(key, {**document, "goneAt": self._clock().isoformat()})


class WorkerRoster:
    """The remote workers' documents, written by the API as their requests come in:
    at most every ``BEAT_EVERY`` seconds per worker, and at once when a worker claims
    from a pool it was not known to serve. Thread-safe (the API's handlers run in a pool)."""

    LIMIT = 10_000  # workers remembered in memory (each restart of a worker is a new one)

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()  # a document is read, changed and written by one request at a time
        self._known: dict[str, tuple[float, frozenset[str], list[Any]]] = {}  # worker -> (next write, pools, outages)

    def seen(self, worker: str, pool: str | None = None) -> None:
        with self._lock:
            next_write, pools, unreachable = self._knowledge(worker)
            if pool is not None and pool not in pools:
                next_write, pools = -float("inf"), pools | {pool}
            if time.monotonic() >= next_write:
                self._write(worker, pools, unreachable)

    def report(self, worker: str, unreachable: list[dict[str, str]]) -> None:
        """The pools whose runner ``worker`` cannot reach, as it says when that changes: written at once."""
        with self._lock:  # not undone by a request of its log shipper read before and written after
            _, pools, _ = self._knowledge(worker)
            self._write(worker, pools, unreachable)

    def _knowledge(self, worker: str) -> tuple[float, frozenset[str], list[Any]]:
        known = self._known.get(worker)
        if known is None:  # new to this API process: a restarted daemon keeps what its store knew
            stored = self._store.get_status(worker_key(worker)) or {}
            known = (-float("inf"), frozenset(stored.get("pools", ())), list(stored.get("unreachable", ())))
        return known

    def _write(self, worker: str, pools: frozenset[str], unreachable: list[Any]) -> None:
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[worker] = (time.monotonic() + BEAT_EVERY, pools, unreachable)
        self._store.put_status(worker_key(worker), {"worker": worker, "pools": sorted(pools),
                                                    "unreachable": unreachable, "seenAt": self._clock().isoformat()})


def worker_key(worker: str) -> str:
    """A worker's names run long (``remote:HOST:PID:RANDOM``); the key column holds 63 characters."""
    return WORKER_PREFIX + hashlib.blake2b(worker.encode(), digest_size=16).hexdigest()


def daemons(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every daemon's document with its ``state``: ``running``, ``stopped``, ``gone``
    (ended without stopping, found so by a later daemon on its host), or ``unresponsive``
    (not seen for ``QUIET_AFTER``: killed, frozen, or its host gone), the ones seen last first."""
    found = []
    for document in store.list_status(PREFIX).values():
        if document.get("stoppedAt"):
            state = "stopped"
        elif document.get("goneAt"):
            state = "gone"
        elif now - _seen(document) > QUIET_AFTER:
            state = "unresponsive"
        else:
            state = "running"
        document = dict(document)
        unreachable = document.pop("unreachable", [])  # placed where the API's model has them
        schedules = document.pop("schedules", None)
        found.append({**document, "goneAt": document.get("goneAt"), "unreachable": unreachable, "state": state,
                      "schedules": schedules if state == "running" else None})
    _one_leader(found)
    return sorted(found, key=_seen, reverse=True)


def _one_leader(found: list[dict[str, Any]]) -> None:
    """Of the running daemons whose document says they materialize the schedules, only the
    one that took the lead last does: the others were killed (or lost the lead) without a
    word since, and their documents read as running until they go quiet."""
    leaders = [d for d in found if d["schedules"] == "materializes"]
    latest = max((d.get("schedulesSince") or "" for d in leaders), default="")
    for daemon in found:
        if daemon in leaders and (daemon.get("schedulesSince") or "") < latest:
            daemon["schedules"] = None
        daemon.pop("schedulesSince", None)


def workers(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every remote worker's document with its ``state``: ``online``, or ``offline``
    (no request for ``QUIET_AFTER``), the ones seen last first."""
    found = []
    for document in store.list_status(WORKER_PREFIX).values():
        document = dict(document)
        unreachable = document.pop("unreachable", [])  # placed where the API's model has it
        found.append({**document, "unreachable": unreachable,
                      "state": "offline" if now - _seen(document) > QUIET_AFTER else "online"})
    return sorted(found, key=_seen, reverse=True)


def serving(pool: str, daemons_found: list[dict[str, Any]], workers_found: list[dict[str, Any]]) -> bool:
    """Whether a running daemon or an online worker runs the jobs of ``pool``."""
    for daemon in daemons_found:
        if daemon["state"] == "running" and (daemon["workers"] == "all" or pool in daemon["workers"].split(",")):
            return True
    return any(worker["state"] == "online" and pool in worker["pools"] for worker in workers_found)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists here; this process's own pid is a successor's
    (a container restarted as pid 1 again)."""
    return pid != os.getpid() and pid_exists(pid)


def _seen(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(document["seenAt"])
