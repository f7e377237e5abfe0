"""The current table model, for queries only.

The schema itself is built by the steps in ``migrations.py``; this module
mirrors their combined result so queries can name columns. It is never used
to create tables: when a migration changes a table, this model changes with
it, and ``tests/test_store_migrations.py`` checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from orchestra.store.types import JSONValue, UTCDateTime

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

resources = Table(
    "resources",
    metadata,
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

runs = Table(
    "runs",
    metadata,
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

run_events = Table(
    "run_events",
    metadata,
    # SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
)

# Counters bumped in the transaction that changes what they count, so a
# reader can tell "anything changed?" with one primary-key lookup.
revisions = Table(
    "revisions",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Small documents the daemon publishes for others to read (the spec status).
status = Table(
    "status",
    metadata,
    Column("key", String(63), primary_key=True),
    Column("value", JSONValue, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Per-schedule pauses (runtime state): one row per paused schedule, keyed by its
# deployment and the schedule's identity (see ``schedule_pauses``).
paused_schedules = Table(
    "paused_schedules",
    metadata,
    Column("deployment", String(253), primary_key=True),
    Column("schedule", String(512), primary_key=True),
    Column("paused_at", UTCDateTime, nullable=False),
)

# Since when each schedule has been in its deployment's spec without a break (see
# ``schedule_spans``): what a schedule brought back owes starts there, not at its last run.
schedule_spans = Table(
    "schedule_spans",
    metadata,
    Column("deployment", String(253), primary_key=True),
    Column("schedule", String(512), primary_key=True),
    Column("since", UTCDateTime),  # NULL: stored before this was kept
)
