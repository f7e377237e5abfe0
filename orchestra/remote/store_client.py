"""``RemoteStore``: the handful of ``Store`` methods a ``LocalWorker`` calls, over the HTTP API.

A remote worker is the daemon's own ``LocalWorker`` (claim, render, run,
supervise, report) handed this object instead of a store, so both kinds of
worker share one implementation and one claim path (``Store.claim_runs``
behind ``POST /workers/{worker}/claim``). What changes is who may do what:

* every report is made *under the lease*: the server applies it only while
  this worker still holds the run at the attempt it claimed
  (``routes_workers``), so a worker whose lease was revoked changes nothing;
* recovering other workers' runs is the server's duty, not a remote
  worker's: ``expired_leases`` and ``active_runs`` answer nothing, so the
  ``LocalWorker`` never recovers or adopts anyone's runs from afar.

Errors come back as the store's (``NotFound``, ``Conflict``; ``ApiUnavailable``
is a ``StoreError``), so ``LocalWorker`` handles an unreachable daemon as it
handles an unreachable database: the pass fails and is tried again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from orchestra.client import ApiClient
from orchestra.errors import Conflict, NotFound
from orchestra.remote.wire import request_to_report, resource_from_wire, run_from_wire
from orchestra.store import ACTIVE, Run, StoredResource, TransitionRequest, TransitionResult

MIN_LEASE = 1.0  # seconds: the server refuses shorter leases
# Bytes of query string per request: under the 8 KiB request line that proxies in front of
# a daemon commonly allow (nginx's default), whatever the number of names or ids asked for.
QUERY_BUDGET = 6000
MAX_VALUES = 1000  # values of one query parameter the API takes at once


def utc_now() -> datetime:
    return datetime.now(UTC)


class RemoteStore:
    """Store calls of one remote worker, as requests to ``/api/v1/workers/{worker}/...``."""

    def __init__(self, client: ApiClient, worker: str, *, queues: Sequence[str] | None = None,
                 limit: int | None = None, before_report: Callable[[Collection[str]], None] = lambda ids: None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.client = client
        self.worker = worker
        self.queues = list(queues) if queues else None
        self.limit = limit
        self.before_report = before_report  # the log shipper's flush: output reaches the server before the end
        self.on_claim: Callable[[Run], None] = lambda run: None  # each run we claimed
        self.on_moved: Callable[[Run], None] = lambda run: None  # each run after a report of ours applied
        self.on_lost: Callable[[set[str]], None] = lambda run_ids: None  # runs a heartbeat found lost
        self._clock = clock
        self._base = f"/workers/{worker}"
        self._attempts: dict[str, int] = {}  # run id -> the attempt we hold: the lease a report names
        self._due_hints: dict[str, datetime | None] = {}  # pool -> next due time, from the last claim
        self._pools: tuple[int, list[StoredResource]] | None = None  # (marker, pools) of the last marker read
        self._lock = threading.Lock()

    # -- resources ---------------------------------------------------------------

    def resource_marker(self) -> int:
        """The marker, and the pools read with it (the worker asks for both on every pass, first)."""
        self._due_hints.clear()  # a hint serves the pass of its claim only
        marker, pools = self._read_resources("WorkPool", ())
        self._pools = (marker, pools)
        return marker

    def list_resources(self, kind: str | None = None) -> list[StoredResource]:
        if kind == "WorkPool" and self._pools is not None:
            return list(self._pools[1])
        if kind is None:
            raise TypeError("a remote worker reads one kind of resource at a time")
        return self._read_resources(kind, ())[1]

    def get_resources(self, kind: str, names: Collection[str]) -> dict[str, StoredResource]:
        found: dict[str, StoredResource] = {}
        for batch in query_batches(sorted(set(names)), "name"):
            found |= {resource.name: resource for resource in self._read_resources(kind, batch)[1]}
        return found

    def get_resource(self, kind: str, name: str) -> StoredResource:
        found = self.get_resources(kind, [name]).get(name)
        if found is None:
            raise NotFound(f"{kind}/{name} not found")
        return found

    def _read_resources(self, kind: str, names: Sequence[str]) -> tuple[int, list[StoredResource]]:
        body = self.client.get(f"{self._base}/resources", kind=kind, name=list(names))
        return int(body["marker"]), [resource_from_wire(item) for item in body["resources"]]

    # -- claims and leases ---------------------------------------------------------

    def next_due_time(self, pool: str | None = None) -> datetime | None:
        """When the pool's next run is due, on this machine's clock (the server sends an offset)."""
        if pool is None:
            raise TypeError("a remote worker asks about its own pool")
        if pool in self._due_hints:  # answered with the claim just made: no second request
            return self._due_hints.pop(pool)
        return self._due_from(self.client.get(f"{self._base}/next-due", pool=pool)["dueInSeconds"])

    def claim_runs(self, pool: str, *, now: datetime, worker: str, max_count: int,
                   lease_seconds: float = 30) -> list[Run]:
        """Claim through the server's claim path; due-ness is decided by the server's clock."""
        self._check_worker(worker)
        body = {"pool": pool, "queues": self.queues, "max": max(1, min(max_count, 500)),
                "leaseSeconds": max(MIN_LEASE, lease_seconds), "limit": self.limit}
        answer = self.client.post(f"{self._base}/claim", body)
        self._due_hints[pool] = self._due_from(answer["nextDueInSeconds"])
        claimed = self._remember(run_from_wire(item) for item in answer["runs"])
        for run in claimed:
            self.on_claim(run)
        return claimed

    def renew_lease(self, worker: str, run_ids: Collection[str], until: datetime) -> set[str]:
        """The heartbeat: extend our leases; the ids missing from the answer were lost."""
        self._check_worker(worker)
        if not run_ids:
            return set()
        seconds = max(MIN_LEASE, (until - self._clock()).total_seconds())
        answer = self.client.post(f"{self._base}/heartbeat", {"runIds": sorted(run_ids), "leaseSeconds": seconds})
        kept = set(answer["kept"])
        lost = set(run_ids) - kept
        with self._lock:
            for run_id in lost:
                self._attempts.pop(run_id, None)
        if lost:
            self.on_lost(lost)
        return kept

    # -- reports ---------------------------------------------------------------------

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Report the changes under our lease; each answer as the store would give it."""
        if not requests:
            return []
        reports: list[dict[str, Any] | TransitionResult] = [self._report(request) for request in requests]
        sendable = [report for report in reports if isinstance(report, dict)]
        answers = iter(self._send(sendable) if sendable else [])
        return [next(answers) if isinstance(report, dict) else report for report in reports]

    def _report(self, request: TransitionRequest) -> dict[str, Any] | TransitionResult:
        extra = set(request.match) - {"worker", "attempt"}
        if extra or request.match.get("worker", self.worker) != self.worker:
            raise TypeError(f"a remote worker reports only under its own lease, not on {sorted(request.match)}")
        attempt = request.match.get("attempt", self._attempts.get(request.run_id))
        if attempt is None:
            return Conflict(f"run {request.run_id} is not held by {self.worker}")
        return request_to_report(request, int(attempt), self._clock())

    def _send(self, reports: list[dict[str, Any]]) -> list[TransitionResult]:
        ending = [r["runId"] for r in reports if r["toState"] not in ACTIVE]
        if ending:
            self.before_report(ending)
        try:
            answer = self.client.post(f"{self._base}/transitions", {"reports": reports})
        except Conflict as refused:  # no report applied: the answer's reasons are in its detail
            return [Conflict(str(refused)) for _ in reports]
        except NotFound as missing:
            return [NotFound(str(missing)) for _ in reports]
        return [self._result(item) for item in answer["results"]]

    def _result(self, item: dict[str, Any]) -> TransitionResult:
        if item["status"] == 200:
            run = self._remember([run_from_wire(item["run"])])[0]
            self.on_moved(run)
            return run
        if item["status"] == 404:
            return NotFound(item["detail"])
        return Conflict(item["detail"])

    # -- reads -----------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        found = self.get_runs([run_id]).get(run_id)
        if found is None:
            raise NotFound(f"run {run_id!r} not found")
        return found

    def get_runs(self, run_ids: Collection[str]) -> dict[str, Run]:
        ids = sorted(set(run_ids))
        found: dict[str, Run] = {}
        for batch in query_batches(ids, "id"):
            body = self.client.get(f"{self._base}/run-records", id=batch)
            found |= {run.id: run for run in self._remember(run_from_wire(item) for item in body["runs"])}
        return found

    def runs_in_states(self, states: str | Collection[str], *, pool: str | None = None,
                       worker: str | None = None, deployment: str | None = None) -> list[Run]:
        """Our own runs in ``states`` (a remote worker never asks about others')."""
        self._check_worker(worker)
        wanted = [states] if isinstance(states, str) else sorted(states)
        body = self.client.get(f"{self._base}/runs", state=wanted)
        runs = self._remember(run_from_wire(item) for item in body["runs"])
        return [run for run in runs if (pool is None or run.pool == pool)
                and (deployment is None or run.deployment == deployment)]

    # -- the server's duties -------------------------------------------------------------

    def expired_leases(self, now: datetime) -> list[Run]:
        """None: the daemon recovers runs whose lease ran out, wherever their worker was."""
        return []

    def active_runs(self, *, pool: str | None = None, worker: str | None = None) -> list[Run]:
        """None to recover at start: a restarted worker has a new name, and the daemon
        recovers what the old one left once its leases run out."""
        return []

    def take_over(self, run_id: str, **_: Any) -> Run | None:
        return None  # adoption is the daemon's: never offered anything to adopt, see above

    # -- helpers ---------------------------------------------------------------------------

    def _remember(self, runs: Iterable[Run]) -> list[Run]:
        """Note the attempt of each run we hold; forget the runs we no longer hold."""
        runs = list(runs)
        with self._lock:
            for run in runs:
                if run.worker == self.worker and run.state in ACTIVE:
                    self._attempts[run.id] = run.attempt
                else:
                    self._attempts.pop(run.id, None)
        return runs

    def _due_from(self, seconds: float | None) -> datetime | None:
        return None if seconds is None else self._clock() + timedelta(seconds=seconds)

    def _check_worker(self, worker: str | None) -> None:
        if worker != self.worker:
            raise TypeError(f"this RemoteStore speaks for worker {self.worker}, not {worker}")


def query_batches(values: Sequence[str], parameter: str, budget: int = QUERY_BUDGET) -> Iterator[list[str]]:
    """``values`` cut into runs of consecutive ones whose ``parameter=value&...`` query fits ``budget``."""
    batch: list[str] = []
    used = 0
    for value in values:
        size = len(parameter) + 2 + len(quote(value, safe=""))
        if batch and (used + size > budget or len(batch) == MAX_VALUES):
            yield batch
            batch, used = [], 0
        batch.append(value)
        used += size
    if batch:
        yield batch
