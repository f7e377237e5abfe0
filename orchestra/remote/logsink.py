"""The server's end of log shipping: append a remote worker's log bytes, each byte once.

A remote worker keeps a job's output in its own log file and sends the new
bytes with their offset *in its file*. The server appends them to the run's
log (``state_dir/logs/<run-id>.log``, the file ``orchestra logs`` and the API
read). The same run may be logged by several workers in turn (attempt 1 on a
worker that died, attempt 2 on another) and each worker's file starts at 0,
so the server remembers, per run, where each worker's stream begins in the
run's log (a small ``<run-id>.log.streams`` JSON file next to it). With that:

* a chunk the server already has (a retry after a lost answer) is skipped,
  or only its new tail is written;
* a chunk beyond what the server has (a gap) writes nothing, and the answer
  says where the stream stands so the worker sends again from there.

The answer is always the stream's length on the server: the worker's next offset.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

_lock = threading.Lock()  # appends of one server process; a run's log has one server


def append_chunk(log_dir: Path, run_id: str, worker: str, offset: int, data: bytes) -> int:
    """Append the part of ``data`` (found at ``offset`` of ``worker``'s file) the log lacks;
    how much of that worker's stream the log now holds."""
    log_path = log_dir / f"{run_id}.log"
    with _lock:
        bases = _read_bases(log_path)
        size = log_path.stat().st_size if log_path.exists() else 0
        if worker not in bases:
            if offset > 0:  # the start of this stream is lost (the log was removed): begin here
                bases[worker] = size - offset
            else:
                bases[worker] = size
            _write_bases(log_path, bases)
        held = size - bases[worker]  # bytes of this worker's stream already in the log
        if offset > held or offset + len(data) <= held:
            return held
        _append(log_path, data[held - offset:])
        return offset + len(data)


def has_stream(log_dir: Path, run_id: str, worker: str) -> bool:
    """Whether ``worker`` already wrote to the run's log (it may finish its stream after a retry
    released the run, until another worker takes it)."""
    return worker in _read_bases(log_dir / f"{run_id}.log")


def _streams_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".streams")


def _read_bases(log_path: Path) -> dict[str, int]:
    try:
        return dict(json.loads(_streams_path(log_path).read_text()))
    except FileNotFoundError:
        return {}


def _write_bases(log_path: Path, bases: dict[str, int]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    path = _streams_path(log_path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(bases))
    os.replace(temporary, path)


def _append(log_path: Path, data: bytes) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
