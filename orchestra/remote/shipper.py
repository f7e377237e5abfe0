"""``LogShipper``: send the new bytes of a remote worker's job logs to the daemon.

The worker's jobs write their logs on the worker's machine (the runners and
``note`` write ``log_dir/<run-id>.log`` as they do in the daemon); a thread
sends what each file gained since the last time, in chunks of at most
``CHUNK`` bytes, to ``POST /runs/{id}/logs?offset=N`` (``remote.logsink``
appends each byte once, so a chunk sent twice after a lost answer is
harmless). While the daemon cannot be reached, the thread waits and tries
again with a growing delay; nothing is lost, since the bytes stay in the
file. Offsets count from where the file stood when the run was claimed:
earlier bytes (an attempt a previous worker process ran here) were sent by
that process under its own name.

``flush(run_ids)`` ships those runs' logs at once, from the worker's thread,
before it reports an attempt's end: the output is on the server before the
state that says it is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestra.client import ApiClient, ApiUnavailable
from orchestra.errors import Conflict, NotFound, OrchestraError

log = logging.getLogger("orchestra.worker")

CHUNK = 256 * 1024  # bytes per request
TICK = 0.2  # seconds between looks at the files
LINGER = 10.0  # seconds a finished file is still watched (the last notes follow the report)
MAX_BACKOFF = 10.0
FLUSH_BUDGET = 2.0  # seconds a flush may take before the report goes anyway
FLUSH_PARALLEL = 8  # logs a flush sends at once (a pass may end many attempts)


@dataclass
class _Stream:
    path: Path
    start: int  # the file's size when the run was claimed
    sent: int = 0  # bytes after ``start`` the server holds
    held: bool = True  # the worker holds the run; once released the stream lingers, then ends
    refused: bool = False  # the server refused it (the run is another worker's now)
    quiet_since: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one sender at a time: the thread or a flush


class LogShipper:
    def __init__(self, client: ApiClient, worker: str, log_dir: Path) -> None:
        self.client = client
        self.worker = worker
        self.log_dir = log_dir
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()  # guards ``_streams``; each stream has its own lock for sending
        self._flushers = ThreadPoolExecutor(FLUSH_PARALLEL, thread_name_prefix="orchestra-log-flush")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0

    def watch(self, run_id: str) -> None:
        """Start (or resume) shipping the log of a run this worker just claimed."""
        with self._lock:
            stream = self._streams.get(run_id)
            if stream is None:
                path = self.log_dir / f"{run_id}.log"
                self._streams[run_id] = _Stream(path, _size(path))
            else:
                stream.held, stream.refused = True, False

    def release(self, run_ids: Collection[str]) -> None:
        """These runs' attempts are over here: ship their last lines, then stop watching."""
        with self._lock:
            for run_id in run_ids:
                if (stream := self._streams.get(run_id)) is not None:
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
        deadline = time.monotonic() + flush_timeout
        while time.monotonic() < deadline and self._ship_all(deadline):
            pass
        self._flushers.shutdown(wait=False)

    def flush(self, run_ids: Collection[str]) -> None:
        """Ship these runs' logs now (the worker is about to report their end)."""
        deadline = time.monotonic() + FLUSH_BUDGET
        with self._lock:
            streams = [(run_id, stream) for run_id in run_ids if (stream := self._streams.get(run_id)) is not None]
        if len(streams) == 1:
            self._ship(*streams[0], deadline)
        elif streams:
            list(self._flushers.map(lambda item: self._ship(*item, deadline), streams))

    def _run(self) -> None:
        while not self._stop.wait(TICK + self._backoff):
            try:
                self._ship_all(time.monotonic() + 5)
                self._backoff = 0.0
            except ApiUnavailable as exc:
                self._backoff = min(MAX_BACKOFF, max(TICK, 2 * self._backoff))
                log.warning("cannot ship logs (retrying in %.1fs): %s", self._backoff, exc)
            except Exception:
                log.exception("shipping logs failed")
                self._backoff = MAX_BACKOFF
            self._forget_finished()

    def _ship_all(self, deadline: float) -> bool:
        """One round over every stream; True if anything was sent."""
        with self._lock:
            streams = list(self._streams.items())
        return any([self._ship(run_id, stream, deadline) for run_id, stream in streams])

    def _ship(self, run_id: str, stream: _Stream, deadline: float) -> bool:
        """Send what the file gained, a chunk at a time, until done or ``deadline``; True if anything went."""
        with stream.lock:
            return self._send(run_id, stream, deadline)

    def _send(self, run_id: str, stream: _Stream, deadline: float) -> bool:
        if stream.refused:
            return False
        sent_any = False
        while time.monotonic() < deadline:
            chunk = _read(stream.path, stream.start + stream.sent, CHUNK)
            if not chunk:
                return sent_any
            try:
                answer = self.client.request("POST", f"/runs/{run_id}/logs", content=chunk,
                                             params={"worker": self.worker, "offset": stream.sent})
            except (Conflict, NotFound) as exc:
                log.warning("run %s: the server no longer takes this worker's log: %s", run_id[:8], exc)
                stream.refused = True
                return sent_any
            except OrchestraError as exc:
                if isinstance(exc, ApiUnavailable):
                    raise
                log.warning("run %s: log chunk refused: %s", run_id[:8], exc)
                stream.refused = True
                return sent_any
            stream.sent = int(answer["nextOffset"])
            stream.quiet_since = time.monotonic()
            sent_any = True
        return sent_any

    def _forget_finished(self) -> None:
        now = time.monotonic()
        with self._lock:
            for run_id, stream in list(self._streams.items()):
                if stream.held or now - stream.quiet_since <= LINGER:
                    continue
                if stream.refused or _size(stream.path) <= stream.start + stream.sent:
                    del self._streams[run_id]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, offset: int, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except FileNotFoundError:
        return b""
