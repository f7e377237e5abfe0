"""Store engine and migrations: from empty, reopen, newer schema, concurrent first open."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_fixtures import clock_fixture, db_url_fixture, process_open, resource, store_fixture  # noqa: F401

from orchestra.errors import StoreError
from orchestra.store import LATEST_VERSION, Store, open_store
from orchestra.store import migrations as migrations_module
from orchestra.store.migrations import MIGRATIONS, Migration
from orchestra.store.tables import metadata

ALL_VERSIONS = list(range(1, LATEST_VERSION + 1))


def applied_versions(url: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(sa.text("SELECT version FROM schema_migrations ORDER BY version")))
    finally:
        engine.dispose()


def test_migrates_an_empty_database(db_url: str) -> None:
    with open_store(db_url):
        pass
    assert applied_versions(db_url) == [m.version for m in MIGRATIONS]
    assert LATEST_VERSION == MIGRATIONS[-1].version == len(MIGRATIONS)


def test_reopen_is_idempotent_and_keeps_data(db_url: str) -> None:
    with open_store(db_url) as first:
        first.apply_resources([resource("WorkPool", "local", {"type": "process"})], [])
    with open_store(db_url) as second:
        assert [r.name for r in second.list_resources()] == ["local"]
        assert migrations_module.migrate(second._db) == 0
    assert applied_versions(db_url) == ALL_VERSIONS


def test_newer_schema_is_refused(db_url: str) -> None:
    with open_store(db_url):
        pass
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO schema_migrations (version, name, applied_at) VALUES (:v, 'future', :t)"),
            {"v": LATEST_VERSION + 7, "t": "2030-01-01 00:00:00.000000"},
        )
    engine.dispose()
    with pytest.raises(StoreError) as raised:
        open_store(db_url)
    assert str(raised.value) == (
        f"database schema version {LATEST_VERSION + 7} is newer than this orchestra "
        f"({LATEST_VERSION}); upgrade orchestra"
    )


def test_table_model_matches_what_migrations_built(db_url: str) -> None:
    with open_store(db_url):
        pass
    engine = sa.create_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        for table in metadata.sorted_tables:
            built = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            modelled = {c.name: c.nullable for c in table.columns}
            assert built == modelled, table.name
        indexes = {i["name"] for i in inspector.get_indexes("runs")}
        assert {"ix_runs_dispatch", "ix_runs_deployment_scheduled", "ix_runs_worker_state", "ix_runs_schedule_slot"} <= indexes
    finally:
        engine.dispose()


def test_failed_step_leaves_nothing_behind(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(db_url):
        pass

    def broken(conn: sa.Connection) -> None:
        sa.Table("half_made", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)).create(conn)
        raise RuntimeError("step failed half way")

    broken_step = Migration(LATEST_VERSION + 1, "broken", broken)
    monkeypatch.setattr(migrations_module, "MIGRATIONS", (*MIGRATIONS, broken_step))
    monkeypatch.setattr(migrations_module, "LATEST_VERSION", broken_step.version)
    with pytest.raises(RuntimeError, match="half way"):
        open_store(db_url)
    engine = sa.create_engine(db_url)
    try:
        assert not sa.inspect(engine).has_table("half_made")
    finally:
        engine.dispose()
    assert applied_versions(db_url) == ALL_VERSIONS


def test_default_url_is_sqlite_under_cwd(tmp_path: Path) -> None:
    with open_store(cwd=tmp_path) as opened:
        assert opened.dialect == "sqlite"
        opened.list_resources()
    assert (tmp_path / ".orchestra" / "orchestra.db").is_file()


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'o.db'}") as opened, opened.engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 10_000
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL


def test_first_open_waits_while_another_process_creates_the_schema(tmp_path: Path) -> None:
    """A new file still in rollback mode, its write lock held by another opener:
    SQLite refuses the switch to WAL at once, without the busy timeout, so
    ``open_store`` must wait on its own (CI saw one of four processes fail)."""
    path = tmp_path / "o.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE made_by_the_other (id INTEGER)")
    # The commit comes later than the refusal (which takes microseconds), and
    # much sooner than the 10 s busy timeout the opener waits at most.
    committer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    committer.start()
    try:
        with open_store(f"sqlite:///{path}") as opened, opened.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert opened.list_resources() == []
    finally:
        committer.join(timeout=10)
        other.close()


def test_unsupported_database_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://localhost/orchestra")


def test_concurrent_first_open_from_processes(db_url: str) -> None:
    """Several processes migrating one empty database at once: all succeed, each step once."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    children = [ctx.Process(target=process_open, args=(db_url, barrier, results)) for _ in range(4)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=90) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert outcomes == ["ok"] * 4
    assert applied_versions(db_url) == ALL_VERSIONS


def test_store_is_usable_right_after_open(store: Store) -> None:
    assert store.list_resources() == []
    assert store.list_runs() == []


def test_unreachable_store_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store unavailable"):
        open_store(f"sqlite:///{tmp_path / 'missing-dir' / 'o.db'}")
    with pytest.raises(StoreError, match="store unavailable"):
        open_store("postgresql://nobody@127.0.0.1:1/orchestra")


def test_schedules_stored_before_their_spans_were_kept_get_one_of_unknown_start(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store made by an orchestra without ``schedule_spans``: its schedules keep owing from their last slot."""
    before = tuple(m for m in MIGRATIONS if m.name != "create schedule_spans")
    with monkeypatch.context() as patched:
        patched.setattr(migrations_module, "MIGRATIONS", before)
        patched.setattr(migrations_module, "LATEST_VERSION", before[-1].version)
        patched.setattr("orchestra.store.resources.schedule_spans.track", lambda *args: None)  # as that version wrote
        with open_store(db_url) as old:
            old.apply_resources([resource("Deployment", "etl", {"command": ["true"], "pool": "local", "schedules": [
                {"interval": "1h"}, {"cron": "0 6 * * *", "active": False}]})], [])
    with open_store(db_url) as upgraded:
        assert upgraded.schedule_spans() == {("etl", "interval:3600s@1970-01-01T00:00:00Z"): None}
    assert applied_versions(db_url) == ALL_VERSIONS
