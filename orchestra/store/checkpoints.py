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
interpreter is released while it copies.

How much waits is judged from the log's own headers (https://www.sqlite.org/fileformat.html,
4.1-4.3), not from its size: SQLite writes the log from its start again after a
checkpoint, so a log that was once big stays that size, and judging by it checkpointed
every second in every later burst. The frames written since the log last started over
carry the salts of its header; less what the thread's last checkpoint copied of them,
that is what waits. Only the ``-wal`` file is read, never the ``-shm``: SQLite's locks
are POSIX locks, which a process loses on a file when it closes *any* descriptor of it,
and SQLite keeps its locks on the ``-shm`` and the database, never on the log. (Reading
the ``-shm`` header did exactly that: the next CLI command found the database unused,
rebuilt its wal-index, and the daemon died of SIGBUS.)

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
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # the log header's first field (fileformat.html, 4.1)
_WAL_HEADER_BYTES = 32  # then frames, each a 24-byte header and a page
_FRAME_HEADER_BYTES = 24


def without_automatic_checkpoints(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """A connection whose commits never checkpoint (the thread does it)."""
    dbapi_connection.execute("PRAGMA wal_autocheckpoint = 0")


class BackgroundCheckpoints:
    """A thread that checkpoints the WAL of the database file at ``path`` when it grew."""

    def __init__(self, path: str, interval: float | None = None) -> None:
        self._path = path
        self._wal = path + "-wal"
        self._interval = CHECK_INTERVAL if interval is None else interval
        self._stop = threading.Event()
        self._last_seen: tuple[int, int] | None = None  # the log's size and time at the last look
        self._checkpointed: tuple[int, int] | None = None  # ... when it was last checkpointed
        self._copied: tuple[bytes, int] = (b"", 0)  # the log's salts, and the frames the last checkpoint copied
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
        """Bytes of the log not yet copied into the database: its frames written since it
        last started over, less those the thread's last checkpoint copied (if the log has
        not started over since); None where the log is not one (its size then stands in).
        Copies made by other processes count as waiting: at worst one checkpoint too many."""
        written = self._frames_written()
        if written is None:
            return None
        salts, frames, page_size = written
        copied_salts, copied = self._copied
        return max(0, frames - (copied if salts == copied_salts else 0)) * page_size

    def _frames_written(self) -> tuple[bytes, int, int] | None:
        """The log's salts, how many frames carry them, and its page size. The frames since
        the log last started over are its first ones, each with the header's salts; later
        frames are older (SQLite changes the salts at every start), so a binary search of a
        dozen 8-byte reads finds the end, however big the log."""
        try:
            with open(self._wal, "rb") as wal:  # never locked by SQLite: closing it costs no lock
                header = wal.read(_WAL_HEADER_BYTES)
                if len(header) < _WAL_HEADER_BYTES or struct.unpack_from(">I", header, 0)[0] not in _WAL_MAGIC:
                    return None
                page_size, salts = struct.unpack_from(">I", header, 8)[0], header[16:24]
                frame_bytes = _FRAME_HEADER_BYTES + page_size
                low, high = 0, (os.fstat(wal.fileno()).st_size - _WAL_HEADER_BYTES) // frame_bytes
                while low < high:  # frames before low carry the salts; high and after do not
                    middle = (low + high) // 2
                    wal.seek(_WAL_HEADER_BYTES + middle * frame_bytes + 8)
                    if wal.read(8) == salts:
                        low = middle + 1
                    else:
                        high = middle
        except OSError:
            return None
        return salts, low, page_size

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            _busy, _frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as err:  # said once per spell of failures; the next look tries again
            if not self._failing:
                log.warning("cannot checkpoint the store's write-ahead log %s: %s", self._wal, err)
            self._failing = True
            self._checkpointed = None  # due again at the next look
            return
        self._failing = False
        written = self._frames_written()  # a log starts over only at a write after a whole copy
        self._copied = (written[0] if written else b"", max(0, copied))
