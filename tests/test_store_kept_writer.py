"""The daemon's loop keeps one SQLite write connection checked out (``Store.keep_writer``)
instead of taking one from the pool for each of a burst's writes; other threads still
take theirs from the pool, and the kept connection survives a store that was locked.

Real SQLite files, a real second connection holding the write lock.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from orchestra.errors import StoreError
from orchestra.store import engine as engine_module
from orchestra.store import open_store


def _connection_of_a_write(store: object) -> object:
    with store._db.write() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("SELECT 1")
        return conn.connection.driver_connection


def test_the_keeping_thread_writes_on_one_connection_and_others_on_the_pool(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'orchestra.db'}")
    try:
        store.keep_writer()
        kept = _connection_of_a_write(store)
        assert _connection_of_a_write(store) is kept
        store.put_status("from-the-loop", {"n": 1})
        seen: list[object] = []
        other = threading.Thread(target=lambda: seen.append(_connection_of_a_write(store)))
        other.start()
        other.join(timeout=30)
        assert seen and seen[0] is not kept  # the API's threads never share the loop's connection
        assert store.get_status("from-the-loop") == {"n": 1}  # committed: another connection reads it
    finally:
        store.close()


def test_a_kept_writer_writes_again_once_a_lock_held_elsewhere_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "orchestra.db"
    store = open_store(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None, timeout=1)
    try:
        store.keep_writer()
        store.put_status("before", {"n": 1})
        holder.execute("BEGIN IMMEDIATE")  # another process's write, taking its time
        with pytest.raises(StoreError, match="locked"):
            store.put_status("while-locked", {"n": 2})
        holder.execute("COMMIT")
        store.put_status("after", {"n": 3})
        assert store.get_status("after") == {"n": 3}
        assert store.get_status("while-locked") is None
    finally:
        holder.close()
        store.close()


def test_a_memory_store_keeps_no_writer(tmp_path: Path) -> None:
    store = open_store("sqlite://")
    try:
        store.keep_writer()
        store.put_status("x", {"n": 1})
        assert store._db._kept is None  # type: ignore[attr-defined]  # its one shared connection is the pool's
    finally:
        store.close()


def test_sqlite_files_are_read_through_a_mapping(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'orchestra.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == engine_module.SQLITE_MMAP_BYTES
    finally:
        store.close()
