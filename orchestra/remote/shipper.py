"""``LogShipper``: send the new bytes of a remote worker's job logs to the daemon.

The worker's jobs write their logs on the worker's machine (the runners and
``note`` write ``log_dir/<run-id>.log`` as they do in the daemon); a thread
sends what each file gained since the last time: one request carries the new
bytes of every log that grew (``POST /workers/{worker}/logs``, at most
``BATCH`` bytes, ``CHUNK`` per log), and ``remote.logsink`` on the server
appends each byte once, so a batch sent twice after a lost answer is
harmless. While the daemon cannot be reached, the thread waits and tries
again with a growing delay; nothing is lost, since the bytes stay in the
files. Each attempt is a stream of its own: its offsets count from where the
file stood when the attempt was claimed (earlier bytes are earlier attempts',
sent as theirs), so an attempt that comes back to this worker after another
worker's is sent whole, after that one's. An attempt that comes back to this
worker unchanged (a start put back for want of resources, see
``workers.launching``) resumes its stream where it stopped: the server
counts its bytes per attempt.

``flush(run_ids)`` ships those runs' logs at once, from the worker's thread,
before it reports an attempt's end: the output is on the server before the
state that says it is complete.

The files are the worker's copies: the daemon keeps its own, which its
``--keep-runs`` deletes. With ``keep`` (``orchestra worker --keep-logs``) the
thread also deletes, every ``SWEEP_INTERVAL``, the copies written to last
longer ago than that which no stream watches any more (all sent, or refused).
Under the lock that ``watch`` takes: an attempt claimed here again meanwhile
either keeps its file or starts a new one, never counts from a deleted one.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from stat import S_ISREG

from orchestra.client import ApiClient, ApiUnavailable
from orchestra.durations import format_duration

log = logging.getLogger("orchestra.worker")

CHUNK = 256 * 1024  # bytes of one log per request
BATCH = 1024 * 1024  # bytes of all logs per request
TICK = 0.2  # seconds between looks at the files
LINGER = 2.0  # seconds a finished file is still watched (its last notes follow the report)
MAX_BACKOFF = 10.0
FLUSH_BUDGET = 2.0  # seconds a flush may take before the report goes anyway
SWEEP_INTERVAL = 600.0  # seconds between looks for copies older than ``keep``
SWEEP_LIMIT = 1000  # copies deleted per look at most, so the lock is never held long
RESUME_LIMIT = 4096  # ended streams whose place is kept, should their attempt come back


@dataclass
class _Stream:
    run_id: str
    attempt: int
    path: Path
    start: int  # the file's size when the attempt was claimed
    end: int | None = None  # where the next attempt's output begins, once one is claimed here
    sent: int = 0  # bytes after ``start`` the server holds
    held: bool = True  # the worker holds the run; once released the stream lingers, then ends
    refused: bool = False  # the server refused it (the run is another worker's now)
    quiet_since: float = 0.0


class LogShipper:
    def __init__(self, client: ApiClient, worker: str, log_dir: Path, keep: timedelta | None = None) -> None:
        self.client = client
        self.worker = worker
        self.log_dir = log_dir
        self.keep = keep
        self._next_sweep = 0.0  # monotonic time of the next look for old copies: the first tick
        self._streams: dict[tuple[str, int], _Stream] = {}  # (run id, attempt) -> its stream
        self._ended: dict[tuple[str, int], tuple[int, int]] = {}  # (run id, attempt) -> (start, sent), oldest first
        self._lock = threading.Lock()  # one sender at a time (the thread or a flush); guards ``_streams``
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0

    def watch(self, run_id: str, attempt: int) -> None:
        """Start (or resume) shipping the log of an attempt this worker just claimed."""
        with self._lock:
            stream = self._streams.get((run_id, attempt))
            if stream is None:
                path = self.log_dir / f"{run_id}.log"
                size = _size(path)
                for earlier in self._of([run_id]):  # what follows is this attempt's, not theirs
                    earlier.end = size if earlier.end is None else earlier.end
                start, sent = self._ended.pop((run_id, attempt), (size, 0))
                if start + sent > size:  # the file is not the one it was: a new stream
                    start, sent = size, 0
                self._streams[(run_id, attempt)] = _Stream(run_id, attempt, path, start, sent=sent)
            else:
                stream.held, stream.refused = True, False

    def release(self, run_ids: Collection[str]) -> None:
        """These runs' attempts are over here: ship their last lines, then stop watching."""
        with self._lock:
            for stream in self._of(run_ids):
                stream.held = False
                stream.quiet_since = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="orchestra-log-shipper", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float = 10.0) -> None:
        """Ship what is left (bounded by ``flush_timeout``), then end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(flush_timeout + 5)
        with self._lock:
            try:
                self._ship(list(self._streams.values()), time.monotonic() + flush_timeout)
            except ApiUnavailable as exc:
                log.warning("the last log lines stay in %s: %s", self.log_dir, exc)

    def flush(self, run_ids: Collection[str]) -> None:
        """Ship these runs' logs now (the worker is about to report their end)."""
        with self._lock:
            self._ship(self._of(run_ids), time.monotonic() + FLUSH_BUDGET)

    def _of(self, run_ids: Collection[str]) -> list[_Stream]:
        wanted = set(run_ids)
        return [stream for stream in self._streams.values() if stream.run_id in wanted]

    def _run(self) -> None:
        while not self._stop.wait(TICK + self._backoff):
            with self._lock:
                try:
                    self._ship(list(self._streams.values()), time.monotonic() + 5)
                    self._backoff = 0.0
                except ApiUnavailable as exc:
                    self._backoff = min(MAX_BACKOFF, max(TICK, 2 * self._backoff))
                    log.warning("cannot ship logs (retrying in %.1fs): %s", self._backoff, exc)
                except Exception:
                    log.exception("shipping logs failed")
                    self._backoff = MAX_BACKOFF
                self._forget_finished()
            self._maybe_delete_old_copies()

    def _ship(self, streams: list[_Stream], deadline: float) -> None:
        """Send what ``streams`` gained, a batch at a time, until all is sent or ``deadline``."""
        while time.monotonic() < deadline:
            batch = _next_batch(streams)
            if not batch:
                return
            chunks = [{"runId": stream.run_id, "attempt": stream.attempt, "offset": stream.sent,
                       "data": base64.b64encode(data).decode()} for stream, data in batch]
            answer = self.client.post(f"/workers/{self.worker}/logs", {"chunks": chunks})
            for (stream, _), result in zip(batch, answer["results"], strict=True):
                self._note(stream, result)

    def _note(self, stream: _Stream, result: dict[str, object]) -> None:
        if result["status"] == 200:
            stream.sent = int(str(result["nextOffset"]))
            stream.quiet_since = time.monotonic()
        else:  # the run is another worker's now (or gone): its log is not ours to write any more
            log.warning("run %s: the server no longer takes this worker's log: %s", stream.run_id[:12],
                        result["detail"])
            stream.refused = True

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for key, stream in list(self._streams.items()):
            if stream.held or now - stream.quiet_since <= LINGER:
                continue
            if stream.refused or _length(stream) <= stream.sent:
                del self._streams[key]
                if not stream.refused:
                    self._remember_end(key, stream)

    def _remember_end(self, key: tuple[str, int], stream: _Stream) -> None:
        """Keep where an ended stream stopped, for its attempt's return (see the module doc)."""
        self._ended[key] = (stream.start, stream.sent)
        while len(self._ended) > RESUME_LIMIT:
            del self._ended[next(iter(self._ended))]


    def _maybe_delete_old_copies(self) -> None:
        """Every ``SWEEP_INTERVAL`` with ``keep``: ``delete_old_copies``; a failure is logged, never fatal."""
        if self.keep is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            deleted = self.delete_old_copies(time.time() - self.keep.total_seconds())
        except OSError as exc:
            log.warning("cannot delete old log copies in %s: %s", self.log_dir, exc)
            return
        if deleted:
            log.info("deleted %d local log copy(ies) last written more than %s ago (--keep-logs)",
                     deleted, format_duration(self.keep))

    def delete_old_copies(self, cutoff: float, limit: int = SWEEP_LIMIT) -> int:
        """Delete ``<run-id>.log`` files of ``log_dir`` last modified before ``cutoff`` (epoch
        seconds) that no stream watches; how many went (at most ``limit``)."""
        deleted = 0
        with self._lock:
            watched = {stream.path.name for stream in self._streams.values()}
            for path in self.log_dir.glob("*.log"):
                if deleted >= limit:
                    break
                if path.name in watched or _modified(path) >= cutoff:
                    continue
                path.unlink(missing_ok=True)
                deleted += 1
            gone = {key for key in self._ended if not (self.log_dir / f"{key[0]}.log").exists()}
            for key in gone:
                del self._ended[key]
        return deleted


def _next_batch(streams: list[_Stream]) -> list[tuple[_Stream, bytes]]:
    """The unsent bytes of each stream (up to ``CHUNK`` each, ``BATCH`` in all)."""
    batch: list[tuple[_Stream, bytes]] = []
    room = BATCH
    for stream in streams:
        if stream.refused or room <= 0:
            continue
        unsent = _length(stream) - stream.sent
        if unsent <= 0:
            continue
        data = _read(stream.path, stream.start + stream.sent, min(CHUNK, room, unsent))
        if data:
            batch.append((stream, data))
            room -= len(data)
    return batch


def _length(stream: _Stream) -> int:
    """How many bytes of the file are this stream's (so far)."""
    end = _size(stream.path) if stream.end is None else stream.end
    return max(0, end - stream.start)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _modified(path: Path) -> float:
    """When a regular file was last written (epoch seconds); infinity for anything else."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return float("inf")
    return stat.st_mtime if S_ISREG(stat.st_mode) else float("inf")


def _read(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes at ``offset``; none if the file cannot be read now (gone, or
    no descriptor left): what is unsent is tried again at the next tick."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        log.debug("cannot read %s now: %s", path, exc)
        return b""
