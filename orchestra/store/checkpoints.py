"""WAL checkpoints off the writer's thread, for a SQLite store that a daemon drives.

In WAL mode SQLite appends every commit to the ``-wal`` file and, by default,
the commit that takes the file past 1,000 pages copies them all back into the
database and syncs it (an automatic checkpoint) before it returns. In a burst
of short runs that commit is the daemon's loop's: about a tenth of its write
time went to the copies and the ``fsync``. A daemon instead turns the automatic
checkpoints off on its own connections and has a thread checkpoint the log
once it has been left alone for a second after a write (so a burst's copy
comes after it), or every second while more than 4 MB of it wait to be copied;
SQLite runs a checkpoint beside readers and writers (``PASSIVE``), and the
interpreter is released while it copies. How much waits is read from the wal-index header in
the ``-shm`` file (its ``mxFrame`` less its ``nBackfill``, a documented format:
https://www.sqlite.org/walformat.html), not from the log's size: SQLite reuses
the log file from its start after a checkpoint, so a log that was once big stays
that size, and judging by it checkpointed every second in every later burst.

Other processes on the same file (CLI commands) keep the automatic
checkpoints, and the last connection to close checkpoints whatever is left,
as before. If the thread cannot checkpoint (a reader holds an old snapshot),
the log grows until it can, as it would with the automatic ones.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between looks at the log's size
BUSY_LOG_BYTES = 4 * 1024 * 1024  # a log still being written is checkpointed only once this much waits in it
_WAL_INDEX_VERSION = 3007000  # the wal-index header's iVersion (walformat.html, 2.1)
_WAL_INDEX_BYTES = 104  # through nBackfill, the first field of the checkpoint info at offset 96


def without_automatic_checkpoints(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """A connection whose commits never checkpoint (the thread does it)."""
    dbapi_connection.execute("PRAGMA wal_autocheckpoint = 0")


class BackgroundCheckpoints:
    """A thread that checkpoints the WAL of the database file at ``path`` when it grew."""

    def __init__(self, path: str, interval: float | None = None) -> None:
        self._path = path
        self._wal = path + "-wal"
        self._shm = path + "-shm"
        self._interval = CHECK_INTERVAL if interval is None else interval
        self._stop = threading.Event()
        self._last_seen: tuple[int, int] | None = None  # the log's size and time at the last look
        self._checkpointed: tuple[int, int] | None = None  # ... when it was last checkpointed
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="orchestra-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (the last connection's close checkpoints what is left)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, check_same_thread=False)
        try:
            while not self._stop.wait(self._interval):
                if self._due():
                    self._checkpoint(connection)
        finally:
            connection.close()

    def _due(self) -> bool:
        """Is a checkpoint due? When the log was written and then left alone for a whole
        interval (the copy then competes with nothing, not with a burst of runs), or
        when it is big. A stat, not a query: idle costs nothing."""
        try:
            stat = os.stat(self._wal)
        except FileNotFoundError:
            return False
        seen = (stat.st_size, stat.st_mtime_ns)
        quiet, self._last_seen = seen == self._last_seen, seen
        if seen == self._checkpointed:
            return False
        if not quiet:
            waiting = self._waiting_bytes()
            if (stat.st_size if waiting is None else waiting) < BUSY_LOG_BYTES:
                return False
        self._checkpointed = seen
        return True

    def _waiting_bytes(self) -> int | None:
        """Bytes of the log not yet copied into the database, from the wal-index header
        (``mxFrame`` frames written, ``nBackfill`` copied, pages of ``szPage``); None
        where it cannot be read as documented (the log's size then stands in)."""
        try:
            with open(self._shm, "rb") as shm:
                header = shm.read(_WAL_INDEX_BYTES)
        except OSError:
            return None
        if len(header) < _WAL_INDEX_BYTES or struct.unpack_from("=I", header, 0)[0] != _WAL_INDEX_VERSION:
            return None
        page_size, frames = struct.unpack_from("=HI", header, 14)
        copied = struct.unpack_from("=I", header, 96)[0]
        return max(0, frames - copied) * (65536 if page_size == 1 else page_size)

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as err:  # said once per spell of failures; the next look tries again
            if not self._failing:
                log.warning("cannot checkpoint the store's write-ahead log %s: %s", self._wal, err)
            self._failing = True
            self._checkpointed = None  # due again at the next look
            return
        self._failing = False
