"""``Store``: the store's public face, one method per use case.

Each method is one transaction (a read snapshot or a write) around a query
module (``resources``, ``runs``, ``transitions``, ``claim``); the logic lives
there. ``open_store`` builds the engine, applies pending migrations and
returns a ready ``Store``. Timestamps the store writes itself (created_at,
event times) come from the injected ``clock`` so tests can fix time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from orchestra.store.leadership import Leadership, leadership
from orchestra.store import (
    claim,
    event_log,
    resources,
    retention,
    runs,
    schedule_pauses,
    schedule_spans,
    stats,
    status,
    transitions,
)
from orchestra.store.engine import Database, default_url, make_engine
from orchestra.store.migrations import migrate
from orchestra.store.models import (
    ACTIVE,
    CANCELLING,
    FinishedAndClaimed,
    NewRun,
    ResourceWrite,
    Run,
    RunEvent,
    StoredResource,
)
from orchestra.store.transitions import TransitionRequest, TransitionResult

RESOURCES_LOCK = "orchestra:resources"  # PostgreSQL's advisory lock around every write of resources

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def open_store(url: str | None = None, *, cwd: Path | None = None, clock: Clock = utc_now) -> Store:
    """Open (and migrate) the store at ``url``; default: SQLite in ``cwd/.orchestra``."""
    db = Database(make_engine(url or default_url(cwd)))
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return Store(db, clock)


class Store:
    """Resources and runs, persisted. Safe to share between threads."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock
        self._dispatch = claim.DispatchCache()  # pools, queues, deployments claims read, per revision

    @property
    def engine(self) -> Engine:
        """For benchmarks and tests that count statements; not for queries."""
        return self._db.engine

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def checkpoint_in_background(self) -> None:
        """Take SQLite's WAL checkpoints off the writing thread (see ``store.checkpoints``);
        nothing on PostgreSQL. For the daemon, whose loop's writes a burst waits on."""
        self._db.checkpoint_in_background()

    def keep_writer(self) -> None:
        """Keep a write connection checked out for the calling thread (SQLite files
        only; see ``Database.keep_writer``): for the daemon's loop, which writes once
        per wave of a burst."""
        self._db.keep_writer()

    def close(self) -> None:
        self._db.close()

    def leadership(self, name: str) -> Leadership:
        """The lead for ``name`` among the processes sharing this store (``store.leadership``)."""
        return leadership(self._db.engine, name)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- resources ---------------------------------------------------------

    def list_resources(self, kind: str | None = None) -> list[StoredResource]:
        with self._db.read() as conn:
            return resources.list_resources(conn, kind)

    def get_resource(self, kind: str, name: str) -> StoredResource:
        with self._db.read() as conn:
            return resources.get_resource(conn, kind, name)

    def get_resources(self, kind: str, names: Collection[str]) -> dict[str, StoredResource]:
        """The named resources of one kind that exist, by name, in one query."""
        with self._db.read() as conn:
            return resources.get_resources(conn, kind, sorted(set(names)))

    def apply_resources(self, upserts: Sequence[ResourceWrite], deletes: Sequence[tuple[str, str]] = ()) -> None:
        with self._resource_write() as conn:
            resources.apply_resources(conn, upserts, deletes, self._clock())

    @contextmanager
    def _resource_write(self) -> Iterator[Connection]:
        """A write of resources, one at a time. An apply reads what is stored, then writes the
        difference: two daemons watching one spec directory apply each change at once, and on
        PostgreSQL each read the other's creates as not there yet and failed on the key.
        (SQLite's writers are one at a time already.)"""
        with self._db.write() as conn:
            self._db.lock(conn, RESOURCES_LOCK)
            yield conn

    def change_marker(self) -> tuple[int, int]:
        """Changes whenever a resource or a run does: a daemon compares markers to
        notice, with one cheap read, what other processes (CLI, API) changed."""
        with self._db.read() as conn:
            return resources.revision(conn), status.last_event_id(conn)

    def put_status(self, key: str, value: Any) -> None:
        with self._db.write() as conn:
            status.put_status(conn, key, value, self._clock())

    def get_status(self, key: str) -> Any | None:
        with self._db.read() as conn:
            return status.get_status(conn, key)

    def list_status(self, prefix: str) -> dict[str, Any]:
        with self._db.read() as conn:
            return status.list_status(conn, prefix)

    def delete_status(self, keys: list[str]) -> None:
        with self._db.write() as conn:
            status.delete_status(conn, keys)

    def resource_marker(self) -> int:
        """Changes whenever any resource does (apply, pause override): compare two
        markers to know whether re-reading resources is needed."""
        with self._db.read() as conn:
            return resources.revision(conn)

    def set_paused_override(self, kind: str, name: str, value: bool | None) -> StoredResource:
        with self._db.write() as conn:
            return resources.set_paused_override(conn, kind, name, value, self._clock())

    # -- runs: create and read ----------------------------------------------

    def insert_scheduled_runs(self, new_runs: Sequence[NewRun]) -> int:
        with self._db.write() as conn:
            return runs.insert_scheduled_runs(self._db, conn, new_runs, self._clock())

    def create_run(self, new: NewRun) -> Run:
        with self._db.write() as conn:
            return runs.create_run(conn, new, self._clock())

    def get_run(self, run_id: str) -> Run:
        with self._db.read() as conn:
            return runs.get_run(conn, run_id)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, Run]:
        """The runs with these full ids that exist, by id, in one query."""
        with self._db.read() as conn:
            return runs.get_runs(conn, run_ids)

    def list_runs(
        self,
        *,
        deployment: str | None = None,
        state: str | Collection[str] | None = None,
        pool: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_cursor: str | None = None,
    ) -> list[Run]:
        with self._db.read() as conn:
            return runs.list_runs(
                conn, deployment=deployment, state=state, pool=pool, since=since,
                until=until, limit=limit, before_cursor=before_cursor,
            )

    def events(self, run_id: str) -> list[RunEvent]:
        with self._db.read() as conn:
            return runs.events(conn, run_id)

    def active_runs(self, *, pool: str | None = None, worker: str | None = None) -> list[Run]:
        return self.runs_in_states(ACTIVE, pool=pool, worker=worker)

    def runs_in_states(
        self,
        states: str | Collection[str],
        *,
        pool: str | None = None,
        worker: str | None = None,
        deployment: str | None = None,
    ) -> list[Run]:
        with self._db.read() as conn:
            return runs.runs_in_states(conn, states, pool=pool, worker=worker, deployment=deployment)

    def last_slot(self, deployment: str, schedule_identity: str) -> datetime | None:
        with self._db.read() as conn:
            return runs.last_slot(conn, deployment, schedule_identity)

    def last_slots(self, schedules: Collection[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
        """``last_slot`` of each (deployment, schedule identity) given that has one."""
        with self._db.read() as conn:
            return runs.last_slots(conn, schedules)

    def next_due_time(self, pool: str | None = None) -> datetime | None:
        with self._db.read() as conn:
            return runs.next_due_time(conn, pool)

    # -- runs: state changes -------------------------------------------------

    def transition(
        self,
        run_id: str,
        to_state: str,
        reason: str,
        *,
        expect: Collection[str] | None = None,
        match: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Run:
        """One compare-and-set state change with its event (see ``transitions``)."""
        with self._db.write() as conn:
            return transitions.transition(
                conn, run_id, to_state, reason, self._clock(), expect=expect, match=match, fields=fields
            )

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Many state changes and their events in one transaction; a ``Conflict`` or
        ``NotFound`` answers a request that fails its guard without stopping the others."""
        if not requests:
            return []
        with self._db.write() as conn:
            return transitions.transition_many(conn, requests, self._clock())

    def renew_lease(self, worker: str, run_ids: Collection[str], until: datetime) -> set[str]:
        with self._db.write() as conn:
            return transitions.renew_lease(conn, worker, run_ids, until)

    def take_over(self, run_id: str, *, from_worker: str | None, attempt: int, worker: str,
                  lease_until: datetime, reason: str, runner_ident: str | None = None,
                  start_time: datetime | None = None, job: dict[str, Any] | None = None,
                  variables_patch: list[dict[str, Any]] | None = None) -> Run | None:
        """Give an active run to another worker (adoption); None if it moved on meanwhile.
        With ``runner_ident``, a Pending run whose job started unrecorded becomes Running
        (with ``job`` and ``variables_patch`` recorded, if given)."""
        with self._db.write() as conn:
            return transitions.take_over(conn, run_id, from_worker=from_worker, attempt=attempt, worker=worker,
                                         lease_until=lease_until, reason=reason, now=self._clock(),
                                         runner_ident=runner_ident, start_time=start_time, job=job,
                                         variables_patch=variables_patch)

    def expired_leases(self, now: datetime) -> list[Run]:
        with self._db.read() as conn:
            return transitions.expired_leases(conn, now)

    def delete_future_scheduled(self, deployment: str, keep_identities: Collection[str], now: datetime) -> int:
        """Withdraw future runs of schedules that are gone (see ``transitions.withdraw_scheduled``)."""
        with self._db.write() as conn:
            return transitions.withdraw_scheduled(conn, deployment, keep_identities, now)

    def forgettable_runs(self, ended_before: datetime, limit: int) -> list[str]:
        """Runs over before ``ended_before`` that may be deleted, oldest first (see ``retention``)."""
        with self._db.read() as conn:
            return retention.forgettable_runs(conn, ended_before, limit)

    def forget_runs(self, run_ids: Sequence[str]) -> int:
        """Delete these runs (those that are over) and their events, in one transaction."""
        with self._db.write() as conn:
            return retention.forget_runs(conn, run_ids)

    # -- dispatch --------------------------------------------------------------

    def claim_runs(
        self, pool: str, *, now: datetime, worker: str, max_count: int, lease_seconds: float = 30,
        queues: Collection[str] | None = None,
    ) -> list[Run]:
        """Due runs of ``pool`` (of ``queues`` only, if given) made Pending under ``worker``."""
        with self._db.write() as conn:
            return claim.claim_runs(
                self._db, conn, pool, now=now, worker=worker, max_count=max_count,
                lease_seconds=lease_seconds, event_time=self._clock(), queues=queues, cache=self._dispatch,
            )

    def explain_waiting(self, pool: str, now: datetime, *, limit: int = 1000) -> list[tuple[Run, str]]:
        with self._db.read() as conn:
            return claim.explain_waiting(conn, pool, now, limit)

    # -- the web UI's paged lists and aggregates (see ``stats``) -----------------

    def page_resources(self, kind: str, *, name: str | None = None, pool: str | None = None,
                       labels: Mapping[str, str] | None = None, offset: int = 0,
                       limit: int = 50) -> stats.ResourcePage:
        """One page of ``kind`` by name, filtered in SQL, with the total that match."""
        with self._db.read() as conn:
            return stats.page_resources(conn, kind, name=name, pool=pool, labels=labels or {},
                                        offset=offset, limit=limit)

    def latest_runs(self, deployments: Collection[str], now: datetime) -> dict[str, Run]:
        """The last run due by ``now`` of each named deployment that has one, in one query."""
        with self._db.read() as conn:
            return stats.latest_runs(conn, sorted(set(deployments)), now)

    def runs_per_hour(self, since: datetime) -> list[stats.HourCount]:
        with self._db.read() as conn:
            return stats.runs_per_hour(conn, since)

    def queue_load(self, now: datetime) -> list[stats.QueueLoad]:
        with self._db.read() as conn:
            return stats.queue_load(conn, now)

    def late_runs(self, due_before: datetime, *, limit: int = 20) -> list[Run]:
        with self._db.read() as conn:
            return stats.late_runs(conn, due_before, limit)

    # -- API-managed resources, schedule pauses, the event log ----------------

    def put_api_resource(self, write: ResourceWrite, *, replace: bool,
                         schedules: Collection[str] | None = None) -> StoredResource:
        """Create or replace an API-managed resource (see ``resources.put_api_resource``)."""
        with self._resource_write() as conn:
            return resources.put_api_resource(conn, write, self._clock(), replace=replace, schedules=schedules)

    def delete_api_resource(self, kind: str, name: str) -> StoredResource:
        """Delete an API-managed resource; returns it as it was."""
        with self._resource_write() as conn:
            return resources.delete_api_resource(conn, kind, name, self._clock())

    def set_schedule_paused(self, deployment: str, identity: str, paused: bool) -> bool:
        """Pause or resume one schedule of a deployment; False if it already was."""
        with self._resource_write() as conn:
            return schedule_pauses.set_schedule_paused(conn, deployment, identity, paused, self._clock())

    def paused_schedules(self, deployments: Collection[str] | None = None) -> set[tuple[str, str]]:
        """(deployment, schedule identity) of the paused schedules (of ``deployments`` if given)."""
        with self._db.read() as conn:
            return schedule_pauses.paused_schedules_of(conn, deployments)

    def schedule_spans(self) -> dict[tuple[str, str], datetime | None]:
        """(deployment, schedule identity) -> since when the schedule has been in its spec
        without a break (None: from before that was kept); see ``schedule_spans``."""
        with self._db.read() as conn:
            return schedule_spans.spans(conn)

    def events_after(self, event_id: int, limit: int = 1000) -> list[tuple[RunEvent, str]]:
        """Run events with an id above ``event_id`` in id order, each with its deployment."""
        with self._db.read() as conn:
            return event_log.events_after(conn, event_id, limit)

    # -- a worker's own runs: moves without re-reading, a pass in one write --------

    def transition_seen(self, moves: Sequence[tuple[Run, TransitionRequest]]) -> list[TransitionResult]:
        """``transition_many`` for requests whose runs the caller holds as stored (a worker
        moving its own runs): the runs are not read again when every request is guarded
        by its run's state, worker and attempt (see ``transitions.transition_seen``)."""
        if not moves:
            return []
        try:
            with self._db.write() as conn:
                return transitions.transition_seen(conn, moves, self._clock())
        except transitions.RunsChanged:  # rolled back: let each request meet the run as stored
            return self.transition_many([request for _, request in moves])

    def finish_and_claim(
        self, moves: Sequence[tuple[Run, TransitionRequest]], pool: str, *, now: datetime, worker: str,
        max_count: int, lease_seconds: float = 30, queues: Collection[str] | None = None,
    ) -> FinishedAndClaimed:
        """``transition_seen(moves)`` then ``claim_runs(pool, ...)`` in one transaction,
        with the claimed runs' deployments, the pool's next due time and ``worker``'s
        runs being cancelled, read after them.

        For a worker draining a burst: the jobs that ended free room that the
        claim fills at once, and one write replaces the two writes and three
        reads of a pass. Every guarantee of the two calls holds, since each
        runs exactly as it does alone; if anything fails, neither happened.
        """
        try:
            return self._finish_and_claim(moves, pool, now, worker, max_count, lease_seconds, queues, seen=True)
        except transitions.RunsChanged:  # rolled back: let each request meet the run as stored
            return self._finish_and_claim(moves, pool, now, worker, max_count, lease_seconds, queues, seen=False)

    def rehearse_claim(self, pool: str, *, at: datetime, worker: str, max_count: int, lease_seconds: float = 30,
                       queues: Collection[str] | None = None) -> FinishedAndClaimed:
        """What a ``finish_and_claim`` with nothing ended would answer ``at`` a coming
        time, in a transaction rolled back: nothing is stored, and the runs it
        names as claimed are still Scheduled.

        A worker that sleeps until runs fall due rehearses the claim shortly
        before: the real claim then finds its statements compiled and prepared,
        and the pool, queues and the deployments of every run due by ``at``
        (up to ``claim.PRELOAD_LIMIT``) in the dispatch cache, kept while the
        resource revision holds, instead of paying for all of it after the
        boundary (about 10 ms of the first start of a burst), and each claim of
        the burst for the deployments of the runs it takes.
        """
        return self._finish_and_claim([], pool, at, worker, max_count, lease_seconds, queues, seen=True,
                                      rehearse=True)

    def _finish_and_claim(self, moves: Sequence[tuple[Run, TransitionRequest]], pool: str, now: datetime,
                          worker: str, max_count: int, lease_seconds: float, queues: Collection[str] | None,
                          *, seen: bool, rehearse: bool = False) -> FinishedAndClaimed:
        with self._db.rehearsal() if rehearse else self._db.write() as conn:
            clock = self._clock()
            events: list[dict[str, Any]] = []  # the ends' and the claim's, in one insert
            if not moves:
                finished: list[TransitionResult] = []
            elif seen:
                finished = transitions.transition_seen(conn, moves, clock, events_out=events)
            else:
                finished = transitions.transition_many(conn, [request for _, request in moves], clock)
            claimed = claim.claim_with_resources(
                self._db, conn, pool, now=now, worker=worker, max_count=max_count,
                lease_seconds=lease_seconds, event_time=clock, queues=queues, cache=self._dispatch,
                events_out=events,
            )
            runs.insert_events(conn, events)
            coming: list[str] = []
            if rehearse and claimed.revision is not None:
                # after the claim: its runs are Pending in this transaction, so not among the due ones
                coming = [run.id for run in claimed.runs]
                coming += claim.preload_deployments(conn, pool, now, self._dispatch.at(claimed.revision))
            return FinishedAndClaimed(
                finished=finished, claimed=claimed.runs, deployments=claimed.deployments,
                resource_revision=claimed.revision, next_due=claimed.left_due or runs.next_due_time(conn, pool),
                cancelling=runs.runs_in_states(conn, CANCELLING, worker=worker), coming=coming,
            )
