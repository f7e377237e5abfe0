"""A daemon's SQLite store checkpoints its write-ahead log from a thread, not in the commits
of its loop; other processes' stores keep SQLite's automatic checkpoints.

Real SQLite files. What a checkpoint does is seen from outside: a reader that opens
the database file as immutable reads only the file, never the log, so it sees a
write only once a checkpoint has copied it there.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


def test_a_log_is_checkpointed_once_left_alone_for_an_interval_or_once_big(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the thread copies: not in the middle of a burst's writes (each look sees the log
    grown), but at the first look after they stopped, once; and at every look while a
    busy log is big. The looks are made here, on a real file standing for the log."""
    monkeypatch.setattr(checkpoints, "BUSY_LOG_BYTES", 10_000)
    wal = tmp_path / "orchestra.db-wal"
    looks = checkpoints.BackgroundCheckpoints(str(tmp_path / "orchestra.db"))  # not started: we look ourselves

    def written(size: int) -> None:
        with wal.open("ab") as log:
            log.write(b"x" * size)
        os.utime(wal, ns=(time.time_ns(), time.time_ns() + 1))  # a new time even on a coarse clock

    assert not looks._due()  # no log at all
    written(100)
    assert not looks._due()  # written since the last look: a burst may be under way
    written(100)
    assert not looks._due()
    assert looks._due()  # left alone for a whole interval: copied now
    assert not looks._due()  # and once only
    written(20_000)
    assert looks._due()  # big: copied even while it is being written
    written(100)
    assert looks._due()


@pytest.fixture
def wal_database(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A database in WAL mode with a table ``t``, and its writer, whose commits never checkpoint."""
    path = tmp_path / "orchestra.db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("CREATE TABLE t (x BLOB)")
        yield path, writer
    finally:
        writer.close()


def test_a_log_reused_after_a_checkpoint_is_judged_by_what_waits_in_it(
        wal_database: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite writes the log from its start again after a checkpoint, so the file keeps
    the size it once had: a burst after a big one must not count as big (that
    checkpointed every second in every later burst), while one that fills it again does.
    A real database and its log, written on a real connection."""
    monkeypatch.setattr(checkpoints, "BUSY_LOG_BYTES", 200_000)
    path, writer = wal_database
    looks = checkpoints.BackgroundCheckpoints(str(path))  # not started: we look ourselves

    def written(pages: int) -> None:
        for _ in range(pages):
            writer.execute("INSERT INTO t VALUES (randomblob(3000))")  # about a page a row

    written(100)  # past 200 kB waiting
    assert looks._waiting_bytes() >= 200_000
    assert looks._due()  # big while written: copied
    writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # as the thread would
    size = os.path.getsize(f"{path}-wal")
    written(5)  # the log starts over inside the same file
    assert os.path.getsize(f"{path}-wal") == size  # which is as big as before
    assert 0 < looks._waiting_bytes() < 200_000
    assert not looks._due()  # written since the last look, little waiting: left for later
    written(5)
    assert not looks._due()
    written(100)
    assert looks._due()  # big again


def test_a_log_that_cannot_start_over_counts_what_came_after_the_threads_checkpoint(
        wal_database: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch) -> None:
    """While a reader uses the log, SQLite cannot start it over: later writes go after the
    frames already copied, with the same salts. What the thread's own checkpoint copied
    does not wait any more."""
    monkeypatch.setattr(checkpoints, "BUSY_LOG_BYTES", 200_000)
    path, writer = wal_database
    looks = checkpoints.BackgroundCheckpoints(str(path))  # not started: we look ourselves
    for _ in range(100):
        writer.execute("INSERT INTO t VALUES (randomblob(3000))")
    reader = sqlite3.connect(path, isolation_level=None)
    checker = sqlite3.connect(path, check_same_thread=False)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 100  # holds the log from here on
        looks._checkpoint(checker)  # copies all 100 pages; the reader keeps the log from starting over
        for _ in range(5):
            writer.execute("INSERT INTO t VALUES (randomblob(3000))")
        assert 0 < looks._waiting_bytes() < 200_000  # the 5 new pages, not the 105 in the log
    finally:
        reader.close()
        checker.close()


_SHM_DEAD_MANS_SWITCH = 128  # os_unix.c: the -shm byte every connection holds a read lock on while open
_TRY_THE_SWITCH = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
    print("free")
except OSError:
    print("held")
"""


def _switch_seen_from_another_process(shm: Path) -> str:
    return subprocess.run([sys.executable, "-c", _TRY_THE_SWITCH, str(shm), str(_SHM_DEAD_MANS_SWITCH)],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_looking_at_the_log_leaves_sqlites_locks_alone(
        wal_database: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's locks are POSIX locks, which a process loses on a file as soon as it closes any
    descriptor of that file. Had the thread opened and closed the ``-shm`` file itself, the next
    process to open the database would find it unused and rebuild its wal-index under the
    daemon's mappings: the daemon died of SIGBUS (a CI run). After every look, and a
    checkpoint, another process must still find the database in use."""
    monkeypatch.setattr(checkpoints, "BUSY_LOG_BYTES", 10_000)
    path, writer = wal_database
    shm = Path(f"{path}-shm")
    looks = checkpoints.BackgroundCheckpoints(str(path))  # not started: we look ourselves
    assert _switch_seen_from_another_process(shm) == "held"
    for _ in range(3):
        writer.execute("INSERT INTO t VALUES (randomblob(30000))")  # big: the looks read the log
        looks._due()
        looks._waiting_bytes()
        assert _switch_seen_from_another_process(shm) == "held"
    checker = sqlite3.connect(path, check_same_thread=False)
    try:
        looks._checkpoint(checker)
    finally:
        checker.close()
    assert _switch_seen_from_another_process(shm) == "held"
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 3
