"""Per-run log files: the bounded writer runners use and the readers the edges use.

A runner writes a job's merged stdout and stderr through ``BoundedLogWriter``
(every chunk goes to the file at once, so readers see output while the run
goes on). ``orchestra logs RUN [--follow]`` and the HTTP API read it back with
``read_log`` and ``follow_log``, by byte offset, so a client can resume where
it stopped. Plain files and polling: a log is read by at most a few people at
a time, and polling every 100 ms costs nothing next to the job itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
READ_CHUNK = 64 * 1024


class BoundedLogWriter:
    """Appends output to a log file until ``max_bytes``, then one notice, then nothing.

    The file is opened in append mode so that a second attempt logging to the
    same path never erases the first; the bound counts what this writer wrote.
    Writes are unbuffered (one ``write`` syscall per chunk): the point of the
    file is to be read while the job runs. A failed write (disk full) stops
    the logging, not the job: the writer drops further data and says so once.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self._path = path
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC  # read: its last byte, below
        try:
            self._fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the first log in a new directory (not looked for each time: a syscall a run)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, flags, 0o644)
        self._max = max_bytes
        self._written = 0
        size = os.fstat(self._fd).st_size  # an earlier attempt's log: a note starts on a line of its own
        self._last_byte = os.pread(self._fd, 1, size - 1) if size else b"\n"
        self.truncated = False
        self.failed = False

    def write(self, data: bytes) -> None:
        """Write ``data``, or the part of it that fits; drop it once truncated."""
        if self.truncated or self.failed or not data:
            return
        room = self._max - self._written
        self._write_all(data[:room])
        if len(data) > room:
            self._truncate()

    def note(self, message: str) -> None:
        """Append an ``[orchestra]`` line regardless of the bound (it is ours, and short)."""
        if self.failed:
            return
        prefix = b"" if self._last_byte == b"\n" else b"\n"
        self._write_all(prefix + f"[orchestra] {message}\n".encode(), counted=False)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _truncate(self) -> None:
        self.truncated = True
        self.note(f"log truncated at {self._max} bytes; further output discarded")

    def _write_all(self, data: bytes, *, counted: bool = True) -> None:
        """``counted``: the job's output, which the bound is for (our notes are not)."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                if counted:
                    self._written += n
        except OSError as err:
            if not self.failed:
                log.warning("cannot write log file %s: %s; dropping further output", self._path, err)
            self.failed = True
            return
        if data:
            self._last_byte = data[-1:]


def read_log(path: Path, offset: int = 0, limit: int | None = None) -> tuple[bytes, int]:
    """Read from ``offset`` up to ``limit`` bytes (all if None); return the data and next offset.

    A log that does not exist yet (the run has not started) reads as empty,
    so a client polling a fresh run needs no special case.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if limit is None else f.read(limit)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def follow_log(
    path: Path,
    offset: int,
    stop: Callable[[], bool],
    poll_interval: float = 0.1,
) -> Iterator[bytes]:
    """Yield new log data as it arrives, until ``stop()`` is true and the file stops growing.

    ``stop`` is asked *before* each read, so everything written before it
    turned true (the run ended) is still yielded: no tail is lost to the race
    between the job's last write and its end.
    """
    while True:
        stopping = stop()
        chunk, offset = read_log(path, offset, READ_CHUNK)
        if chunk:
            yield chunk
        elif stopping:
            return
        else:
            time.sleep(poll_interval)
