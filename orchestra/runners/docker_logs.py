"""Where a run's log file stands in its container's output, so a new daemon resumes exactly there.

The Docker runner (``runners/docker_follow.py``) reads a container's output
with engine timestamps (``logs(timestamps=True)``): every message arrives as
``<RFC 3339 nano time> <bytes>``. It writes the bytes to the run's log and
keeps, in a small sidecar file next to the log (``RUN.log.cursor``), a
*position*: an anchor second A (the latest second seen) and how many of the
messages written so far are stamped A or later, plus the bytes logged.

Why not just "the time of the last message": the engine stamps stdout and
stderr in two goroutines, so a stream's order (the log file's order) is not
sorted by time; a stderr line may be stamped before the stdout line that
precedes it. What is stable is the order itself. Asking the engine for the
output ``since=A`` returns, in that order, every message stamped A or later;
the ones already written are exactly the first ones of that list, as many as
the position counts. A daemon that adopts the container skips that many and
writes the rest: nothing is lost and nothing is written twice, except the one
message a crash may catch between the log write and the cursor write
(written twice rather than lost, on purpose).

The cursor names its container, so a stale cursor of an earlier attempt of
the same run is never applied to the next attempt's container. No engine
here: this module does not import ``docker``.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["CURSOR_SUFFIX", "LogCursor", "Position", "cursor_path", "parse_second", "split_frame"]

CURSOR_SUFFIX = ".cursor"
_LINE = "{id} {anchor:>20} {count:020d} {offered:020d}\n"  # fixed width: each update overwrites the last
_TIMESTAMP_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Position:
    """How far the log has got: ``count`` messages written are stamped ``anchor`` (a second) or later."""

    anchor: int = 0  # 0: nothing stamped yet, so everything counts
    count: int = 0
    offered: int = 0  # bytes handed to the log writer for this attempt, for the log bound

    @property
    def since(self) -> int | None:
        """The ``since`` to ask the engine for (None: from the start)."""
        return self.anchor or None

    def after(self, second: int | None, size: int) -> Position:
        """The position once one more message, stamped ``second``, is written."""
        if second is None or second == self.anchor:
            return Position(self.anchor, self.count + 1, self.offered + size)
        if second > self.anchor:
            return Position(second, 1, self.offered + size)
        return Position(self.anchor, self.count, self.offered + size)  # a late straggler: before the anchor


def cursor_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + CURSOR_SUFFIX)


def split_frame(frame: bytes) -> tuple[int | None, bytes]:
    """``b"2026-11-26T17:40:06.834915025Z hello\\n"`` -> (1795714806, b"hello\\n").

    A frame without a readable time is all payload (never drop output for a
    format surprise).
    """
    head, sep, payload = frame.partition(b" ")
    second = parse_second(head) if sep else None
    return (second, payload) if second is not None else (None, frame)


def parse_second(raw: bytes) -> int | None:
    """The whole second (since the epoch) of the engine's RFC 3339 time; None if it is not one."""
    match = _TIMESTAMP_RE.match(raw)
    if match is None:
        return None
    whole, zone = match.group(1).decode(), match.group(2).decode()
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:  # a well-formed but impossible date
        return None
    return int(moment.timestamp())


class LogCursor:
    """The sidecar file of one attempt's container; updated after every message written.

    One ``pwrite`` of a fixed-width line per message: the file is tiny, stays
    open, and a reader never sees a half-old, half-new line of different length.
    """

    def __init__(self, log_path: Path, container_id: str, position: Position) -> None:
        self.path = cursor_path(log_path)
        self.container_id = container_id
        self.position = position
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._store(position)

    @staticmethod
    def read(log_path: Path, container_id: str) -> Position:
        """Where the log stands for ``container_id``; the start if the cursor is missing or another's."""
        try:
            fields = cursor_path(log_path).read_text().split()
        except (OSError, UnicodeDecodeError):
            return Position()
        if len(fields) != 4 or fields[0] != container_id or not all(f.isdigit() for f in fields[1:]):
            return Position()
        anchor, count, offered = (int(f) for f in fields[1:])
        return Position(anchor, count, offered)

    def advance(self, second: int | None, size: int) -> None:
        self.position = self.position.after(second, size)
        self._store(self.position)

    def close(self, remove: bool = False) -> None:
        """Close the file; ``remove`` once the container's output is complete (nothing to resume)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _store(self, position: Position) -> None:
        if self._fd is None:
            return
        line = _LINE.format(id=self.container_id, anchor=position.anchor, count=position.count,
                            offered=position.offered)
        with contextlib.suppress(OSError):  # disk full: resuming may repeat output; the job is not harmed
            os.pwrite(self._fd, line.encode(), 0)
