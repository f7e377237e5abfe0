"""Fixtures and helpers for the store contract tests (tests/test_store_*.py).

The ``db_url`` fixture runs every store test on SQLite (a real file in
tmp_path) and, when ``ORCHESTRA_TEST_POSTGRES_URL`` is set, on PostgreSQL,
each test in a fresh schema of its own. With ``ORCHESTRA_REQUIRE_POSTGRES=1``
a missing PostgreSQL URL fails the PostgreSQL tests instead of skipping them,
so CI cannot silently stop covering it.

Test modules import the fixtures as ``db_url_fixture``, ``clock_fixture`` and
``store_fixture``; tests ask for them as ``db_url``, ``clock`` and ``store``.
Importing them (rather than a conftest) keeps them private to the store tests.

Also here: the functions that child processes run in the multi-process
tests (spawned children must import them by module name).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orchestra.store import NewRun, ResourceWrite, Store, open_store

POSTGRES_ENV = "ORCHESTRA_TEST_POSTGRES_URL"
REQUIRE_ENV = "ORCHESTRA_REQUIRE_POSTGRES"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """The store's clock in tests: fixed until a test advances it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def postgres_base_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {POSTGRES_ENV} is not set")
    pytest.skip(f"PostgreSQL store tests need {POSTGRES_ENV}=postgresql+psycopg://user@host/db")
    return None


@pytest.fixture(name="db_url", params=["sqlite", "postgresql"])
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A URL to an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orchestra.db'}"
        return
    base = postgres_base_url()
    assert base is not None
    yield from _postgres_schema(base)


def _postgres_schema(base: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = sa.make_url(base)
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="store")
def store_fixture(db_url: str, clock: FakeClock) -> Iterator[Store]:
    with open_store(db_url, clock=clock) as opened:
        yield opened


# -- builders -------------------------------------------------------------------


def resource(kind: str, name: str, spec: dict[str, Any], content_hash: str | None = None, **kw: Any) -> ResourceWrite:
    return ResourceWrite(
        kind=kind, name=name, metadata={"name": name}, spec=spec,
        source_file=kw.pop("source_file", "specs/all.yaml"), source_line=kw.pop("source_line", 1),
        content_hash=content_hash or repr(sorted(spec.items())), **kw,
    )


def pool(name: str = "local", **spec: Any) -> ResourceWrite:
    return resource("WorkPool", name, {"type": "process", **spec})


def queue(name: str, pool_name: str = "local", **spec: Any) -> ResourceWrite:
    return resource("WorkQueue", name, {"pool": pool_name, **spec})


def deployment(name: str, pool_name: str = "local", **spec: Any) -> ResourceWrite:
    return resource("Deployment", name, {"command": ["true"], "pool": pool_name, **spec})


def new_run(deployment_name: str = "etl", when: datetime = T0, **kw: Any) -> NewRun:
    kw.setdefault("pool", "local")
    return NewRun(deployment=deployment_name, scheduled_time=when, **kw)


def scheduled(deployment_name: str, when: datetime, identity: str = "cron:* * * * * UTC", **kw: Any) -> NewRun:
    key = f"{deployment_name}|{identity}|{when.isoformat()}"
    kw.setdefault("state_reason", f"scheduled by {identity}")
    return new_run(deployment_name, when, idempotency_key=key, schedule_identity=identity, trigger="schedule", **kw)


# -- limit checks shared by the thread and process tests ------------------------


def limit_violations(
    store: Store, pool_limit: int, queue_limits: dict[str, int], deployment_limits: dict[str, int]
) -> list[str]:
    """What exceeds a limit in the current (committed) state of the store."""
    active = store.active_runs()
    problems = []
    if len(active) > pool_limit:
        problems.append(f"pool has {len(active)} active > {pool_limit}")
    for attr, limits in (("queue", queue_limits), ("deployment", deployment_limits)):
        for name, limit in limits.items():
            count = sum(1 for run in active if getattr(run, attr) == name)
            if count > limit:
                problems.append(f"{attr} {name} has {count} active > {limit}")
    return problems


def claim_and_finish(
    store: Store, worker: str, now: datetime, limits: tuple[int, dict[str, int], dict[str, int]], rounds: int
) -> tuple[list[str], list[str]]:
    """A worker's loop, bounded: claim, check limits, run to completion. Returns
    (claimed ids, limit violations seen)."""
    claimed: list[str] = []
    violations: list[str] = []
    idle = 0
    for _ in range(rounds):
        runs = store.claim_runs("local", now=now, worker=worker, max_count=2)
        violations += limit_violations(store, *limits)
        if not runs:
            idle += 1
            if idle > 50 or not store.runs_in_states("Scheduled"):
                break
            time.sleep(0.002)  # back off while others hold the slots; the loop is bounded
            continue
        idle = 0
        for run in runs:
            claimed.append(run.id)
            store.transition(run.id, "Running", "started", expect={"Pending"})
            time.sleep(0.005)  # the job runs, outside any transaction: others claim meanwhile
            store.transition(run.id, "Completed", "exit 0", expect={"Running"}, exit_code=0)
    return claimed, violations


def process_worker(url: str, worker: str, barrier: Any, results: Any, limits: Any) -> None:
    """Child process body of the multi-process claim test."""
    try:
        with open_store(url) as store:
            barrier.wait(timeout=60)
            results.put((worker, *claim_and_finish(store, worker, T0 + timedelta(hours=1), limits, 2000)))
    except BaseException as exc:  # report, do not hang the parent
        results.put((worker, None, [repr(exc)]))


def process_open(url: str, barrier: Any, results: Any) -> None:
    """Child process body of the concurrent-first-open test."""
    try:
        barrier.wait(timeout=60)
        with open_store(url) as store:
            store.list_resources()
        results.put("ok")
    except BaseException as exc:
        results.put(repr(exc))

