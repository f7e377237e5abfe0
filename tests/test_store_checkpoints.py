"""A daemon's SQLite store checkpoints its write-ahead log from a thread, not in the commits
of its loop; other processes' stores keep SQLite's automatic checkpoints.

Real SQLite files. What a checkpoint does is seen from outside: a reader that opens
the database file as immutable reads only the file, never the log, so it sees a
write only once a checkpoint has copied it there.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from orchestra.store import checkpoints, open_store


def _in_the_file(path: Path, key: str) -> bool:
    """Is status ``key`` in the database file itself (not only in its log)?"""
    reader = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return reader.execute("SELECT count(*) FROM status WHERE key = ?", (key,)).fetchone()[0] == 1
    except sqlite3.OperationalError as err:  # not even the schema in the file yet
        assert "no such table" in str(err)
        return False
    finally:
        reader.close()


def _autocheckpoint(store: object) -> int:
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())


def _checkpoint_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "orchestra-checkpoints"]


def test_a_daemons_writes_reach_the_database_file_from_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "CHECK_INTERVAL", 0.05)
    path = tmp_path / "orchestra.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.checkpoint_in_background()
        assert _autocheckpoint(store) == 0  # its own commits never checkpoint
        for round_ in range(3):  # the thread checkpoints each time the log grew, not once
            store.put_status(f"written-{round_}", {"round": round_})
            deadline = time.monotonic() + 20
            while not _in_the_file(path, f"written-{round_}") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _in_the_file(path, f"written-{round_}"), "the write never reached the database file"
    finally:
        store.close()
    assert not _checkpoint_threads()  # closing the store ends the thread


def test_other_stores_keep_sqlites_automatic_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "CHECK_INTERVAL", 0.05)
    path = tmp_path / "orchestra.db"
    with open_store(f"sqlite:///{path}") as cli:  # as a CLI command's
        assert _autocheckpoint(cli) == 1000
        cli.put_status("small", {"x": 1})  # a few pages: SQLite leaves them in the log
        time.sleep(0.3)  # six of the daemon thread's intervals: long enough for it, were there one
        assert not _in_the_file(path, "small")
        assert not _checkpoint_threads()


def test_a_memory_store_has_no_checkpoint_thread() -> None:
    with open_store("sqlite://") as store:
        store.checkpoint_in_background()
        assert not _checkpoint_threads()
