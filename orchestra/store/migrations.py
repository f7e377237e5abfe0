"""Versioned schema migrations, applied by ``open_store``.

Each step is a plain function that takes a ``Connection`` and changes the
schema with Core DDL on tables it declares itself. Steps never call
``metadata.create_all`` on the current model in ``tables.py``: a database made
by version 1 must reach version N by running steps 2..N, exactly as a fresh
one does, so each step describes a change, not a destination.

Every step runs in its own write transaction, together with the row that
records it in ``schema_migrations``. Both dialects have transactional DDL, so
a failing step leaves nothing behind. Two processes starting at once are
serialized by the write lock (SQLite) or an advisory lock (PostgreSQL); the
second re-reads the applied versions under the lock and finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
)

from orchestra.errors import StoreError
from orchestra.store.engine import Database
from orchestra.store.schedule_spans import backfill
from orchestra.store.tables import schema_migrations
from orchestra.store.types import JSONValue, UTCDateTime

_LOCK_NAME = "orchestra:schema_migrations"


def _create_resources(conn: Connection) -> None:
    table = Table(
        "resources",
        MetaData(),
        Column("kind", String(63), primary_key=True),
        Column("name", String(253), primary_key=True),
        Column("metadata", JSONValue, nullable=False),
        Column("spec", JSONValue, nullable=False),
        Column("source_file", Text),
        Column("source_line", Integer),
        Column("content_hash", String(128), nullable=False),
        Column("generation", Integer, nullable=False),
        Column("manager", String(16), nullable=False),
        Column("paused_override", Boolean),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    table.create(conn)


def _create_runs(conn: Connection) -> None:
    meta = MetaData()
    runs = Table(
        "runs",
        meta,
        Column("id", String(32), primary_key=True),
        Column("deployment", String(253), nullable=False),
        Column("pool", String(253), nullable=False),
        Column("queue", String(253), nullable=False),
        Column("idempotency_key", String(512), unique=True),
        Column("schedule_identity", Text),
        Column("slot_time", UTCDateTime),
        Column("trigger", String(32), nullable=False),
        Column("state", String(16), nullable=False),
        Column("state_reason", Text, nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("max_attempts", Integer, nullable=False),
        Column("retry_delay_seconds", Float, nullable=False),
        Column("timeout_seconds", Float),
        Column("parameters", JSONValue, nullable=False),
        Column("job_variables", JSONValue, nullable=False),
        Column("variables_patch", JSONValue),
        Column("job", JSONValue),
        Column("worker", String(253)),
        Column("lease_expires_at", UTCDateTime),
        Column("runner_ident", Text),
        Column("exit_code", Integer),
        Column("scheduled_time", UTCDateTime, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("start_time", UTCDateTime),
        Column("end_time", UTCDateTime),
    )
    events = Table(
        "run_events",
        meta,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("time", UTCDateTime, nullable=False),
        Column("from_state", String(16)),
        Column("to_state", String(16), nullable=False),
        Column("reason", Text, nullable=False),
        Column("attempt", Integer, nullable=False),
    )
    runs.create(conn)
    events.create(conn)
    c = runs.c
    # The dispatch query: due runs of a pool in time order.
    Index("ix_runs_state_pool_scheduled", c.state, c.pool, c.scheduled_time).create(conn)
    Index("ix_runs_deployment_scheduled", c.deployment, c.scheduled_time).create(conn)
    Index("ix_runs_worker", c.worker).create(conn)
    # Listings are newest first; without this every page sorts the whole table.
    Index("ix_runs_created", c.created_at, c.id).create(conn)
    Index("ix_run_events_run", events.c.run_id, events.c.id).create(conn)


def _create_revisions(conn: Connection) -> None:
    table = Table(
        "revisions",
        MetaData(),
        Column("name", String(63), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    table.create(conn)
    conn.execute(table.insert().values(name="resources", value=0))


def _create_status(conn: Connection) -> None:
    Table(
        "status",
        MetaData(),
        Column("key", String(63), primary_key=True),
        Column("value", JSONValue, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ).create(conn)


def _create_paused_schedules(conn: Connection) -> None:
    Table(
        "paused_schedules",
        MetaData(),
        Column("deployment", String(253), primary_key=True),
        Column("schedule", String(512), primary_key=True),
        Column("paused_at", UTCDateTime, nullable=False),
    ).create(conn)


def _index_dispatch_order_and_worker_state(conn: Connection) -> None:
    """The claim reads due runs in (scheduled_time, created_at, id) order, a page at a
    time: with only the time in the index, runs due at one boundary were all read and
    sorted for every page. A worker asks for its runs in a state (being cancelled,
    active) on every pass: indexed by worker alone, that read every run it ever ran."""
    runs = Table(
        "runs", MetaData(),
        Column("id", String(32)), Column("state", String(16)), Column("pool", String(253)),
        Column("worker", String(253)), Column("scheduled_time", UTCDateTime), Column("created_at", UTCDateTime),
    )
    c = runs.c
    Index("ix_runs_state_pool_scheduled", c.state, c.pool, c.scheduled_time).drop(conn)
    Index("ix_runs_dispatch", c.state, c.pool, c.scheduled_time, c.created_at, c.id).create(conn)
    Index("ix_runs_worker", c.worker).drop(conn)
    Index("ix_runs_worker_state", c.worker, c.state).create(conn)


def _index_schedule_slots(conn: Connection) -> None:
    """The scheduler asks for the last slot of each schedule whenever resources change;
    grouped over the whole runs table, that read every run ever made (0.2 s per 200,000
    runs, on every apply or pause). Indexed by schedule and slot, each schedule's last slot
    is one step of the index, and so is "a later slot exists" for ``--keep-runs``."""
    runs = Table(
        "runs", MetaData(),
        Column("deployment", String(253)), Column("schedule_identity", Text), Column("slot_time", UTCDateTime),
    )
    c = runs.c
    Index("ix_runs_schedule_slot", c.deployment, c.schedule_identity, c.slot_time).create(conn)


def _create_schedule_spans(conn: Connection) -> None:
    """A schedule brought back into a spec owed every slot since its last run; see
    ``schedule_spans``. The schedules stored now get rows whose start is unknown."""
    Table(
        "schedule_spans",
        MetaData(),
        Column("deployment", String(253), primary_key=True),
        Column("schedule", String(512), primary_key=True),
        Column("since", UTCDateTime),
    ).create(conn)
    backfill(conn)


class Migration(NamedTuple):
    version: int
    name: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create resources", _create_resources),
    Migration(2, "create runs and run_events", _create_runs),
    Migration(3, "create revisions", _create_revisions),
    Migration(4, "create status", _create_status),
    Migration(5, "create paused_schedules", _create_paused_schedules),
    Migration(6, "index dispatch order and worker state", _index_dispatch_order_and_worker_state),
    Migration(7, "index schedule slots", _index_schedule_slots),
    Migration(8, "create schedule_spans", _create_schedule_spans),
)
LATEST_VERSION = MIGRATIONS[-1].version


def migrate(db: Database) -> int:
    """Bring the schema to ``LATEST_VERSION``; returns how many steps ran here."""
    if _current_version(db) == LATEST_VERSION:
        return 0  # the common case takes no write lock
    applied = 0
    for step in MIGRATIONS:
        with db.write() as conn:
            db.lock(conn, _LOCK_NAME)
            schema_migrations.create(conn, checkfirst=True)
            if _check_version(conn) >= step.version:
                continue
            step.apply(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=step.version, name=step.name, applied_at=datetime.now(UTC)
                )
            )
            applied += 1
    return applied


def _current_version(db: Database) -> int | None:
    with db.read() as conn:
        if not inspect(conn).has_table("schema_migrations"):
            return None
        return _check_version(conn)


def _check_version(conn: Connection) -> int:
    version = conn.scalar(select(func.max(schema_migrations.c.version))) or 0
    if version > LATEST_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this orchestra "
            f"({LATEST_VERSION}); upgrade orchestra"
        )
    return version
