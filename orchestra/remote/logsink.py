"""The server's end of log shipping: append a remote worker's log bytes, each byte once.

A remote worker keeps a job's output in its own log file and sends the new
bytes of each attempt it runs, with their offset *in that attempt's output*.
The server appends them to the run's log (``state_dir/logs/<run-id>.log``,
the file ``orchestra logs`` and the API read). A run's attempts may run on
different workers, and on the same worker again (1 on a, 2 on b, 3 on a), so
the server counts, per stream (a worker's attempt), how many of its bytes
the log holds, in a small ``<run-id>.log.streams`` JSON file next to it.
With that:

* a chunk the server already has (a retry after a lost answer) is skipped,
  or only its new tail is written;
* a chunk beyond what the server has (a gap) writes nothing, and the answer
  says where the stream stands so the worker sends again from there.

The answer is always the stream's length on the server: the worker's next offset.
A chunk without an attempt (an older worker) counts in one stream per worker.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

_lock = threading.Lock()  # appends of one server process; a run's log has one server


def append_chunk(log_dir: Path, run_id: str, worker: str, offset: int, data: bytes,
                 attempt: int | None = None) -> int:
    """Append the part of ``data`` (found at ``offset`` of the stream of ``worker``'s ``attempt``)
    the log lacks; how much of that stream the log now holds."""
    log_path = log_dir / f"{run_id}.log"
    key = _stream_key(worker, attempt)
    with _lock:
        received = _read_received(log_path)
        held = received.get(key, 0)
        if offset > held or offset + len(data) <= held:
            return held
        if not received:  # the run's first log bytes: its directory may not exist yet
            log_path.parent.mkdir(parents=True, exist_ok=True)
        _append(log_path, data[held - offset:])
        received[key] = offset + len(data)
        _write_received(log_path, received)
        return received[key]


def has_stream(log_dir: Path, run_id: str, worker: str) -> bool:
    """Whether ``worker`` already wrote to the run's log (it may finish its stream after a retry
    released the run, until another worker takes it)."""
    return any(_worker_of(key) == worker for key in _read_received(log_dir / f"{run_id}.log"))


def _stream_key(worker: str, attempt: int | None) -> str:
    return worker if attempt is None else f"{worker}#{attempt}"  # worker names hold no '#'


def _worker_of(key: str) -> str:
    return key.partition("#")[0]


def _streams_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".streams")


def _read_received(log_path: Path) -> dict[str, int]:
    try:
        stored = json.loads(_streams_path(log_path).read_text())
    except FileNotFoundError:
        return {}
    if "received" in stored:
        return dict(stored["received"])
    # written before streams were counted per attempt: worker -> where its stream began in the log
    size = log_path.stat().st_size if log_path.exists() else 0
    return {worker: max(0, size - base) for worker, base in stored.items()}


def _write_received(log_path: Path, received: dict[str, int]) -> None:
    path = _streams_path(log_path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"received": received}))
    os.replace(temporary, path)


def _append(log_path: Path, data: bytes) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
