"""Following one container: its output into the run's log, its exit, its removal.

``DockerRunner`` (``runners/docker.py``) makes one ``Follower`` per container it
starts or adopts, and a ``DockerHandle`` over it. The follower's thread reads
the container's output as it comes (``logs(stream=True, follow=True,
timestamps=True)``) into the run's ``BoundedLogWriter``, advancing the
``LogCursor`` after every message, then reads the exit code
(``container.wait()``), adds a plain-words note when the engine killed the
container for memory, and removes the container unless the job asked to keep
it. Only then does it report the end: a handle whose ``poll()`` says "ended"
names a container whose output is complete and which is gone.

One thread and one engine connection per running container, in that order
(logs, then wait): the engine's API is blocking HTTP, so there is nothing to
multiplex as the process runner does with pipes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from docker.errors import APIError, DockerException, NotFound

from orchestra.runners.docker_job import Remembered
from orchestra.runners.docker_logs import LogCursor, split_frame
from orchestra.runners.logs import BoundedLogWriter

__all__ = ["LOST_EXIT_CODE", "Follower", "explain"]

log = logging.getLogger(__name__)

ENGINE_ERRORS = (DockerException, requests.RequestException)
LOST_EXIT_CODE = 255  # recorded when the exit code cannot be known; the log says why
ENGINE_PATIENCE = 300.0  # seconds of engine trouble before a container is given up for lost
_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def explain(err: BaseException) -> str:
    """The engine's own words for an API error, else the exception's."""
    if isinstance(err, APIError) and err.explanation:
        return str(err.explanation).strip()
    return str(err).strip() or type(err).__name__


class Follower:
    """Streams, waits for and removes one container, in a daemon thread; see the module docstring."""

    def __init__(self, container: Any, writer: BoundedLogWriter, cursor: LogCursor, remembered: Remembered,
                 on_end: Callable[[Follower], None]) -> None:
        self.container = container
        self.remembered = remembered
        self.exit_code: int | None = None
        self.ended = threading.Event()
        self._writer = writer
        self._cursor = cursor
        self._on_end = on_end
        self._detached = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=f"orchestra-docker-{container.id[:12]}", daemon=True)

    @property
    def short_id(self) -> str:
        return str(self.container.id[:12])

    def start(self) -> None:
        self._thread.start()

    def detach(self, timeout: float = 5.0) -> None:
        """Stop following, leave the container running (a daemon going away, or a test playing one)."""
        self._detached.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # the socket may be closed already
                stream.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        code: int | None = None
        try:
            complete = self._follow_output(follow=True)
            if self._detached.is_set():
                return
            code, troubled = self._wait_exit()
            if self._detached.is_set():  # ended meanwhile: leave it (and its outcome) to the next daemon
                code = None
                return
            if troubled or not complete:  # the live stream may have missed the end
                self._follow_output(follow=False)
            self._explain_end(code)
            self._remove_unless_kept()
        except Exception as err:  # a bug here must still end the run, never leave it Running forever
            if self._detached.is_set():
                return  # let go on purpose: the stream was closed under our feet
            log.exception("following container %s failed", self.short_id)
            self._writer.note(f"orchestra lost track of container {self.short_id}: {err!r}")
            code = LOST_EXIT_CODE if code is None else code
        finally:
            self._close(code)

    def _follow_output(self, follow: bool) -> bool:
        """Copy the output not yet in the log into it; False if the stream broke off.

        The engine lists the messages since the cursor's anchor second in log
        order; the first ``count`` of them are in the log already (``docker_logs``).
        """
        position = self._cursor.position
        try:
            self._stream = self.container.logs(stream=True, follow=follow, timestamps=True, since=position.since)
        except NotFound:
            return True  # gone: there is nothing more to read
        except APIError as err:  # e.g. a logging driver the engine cannot read back
            self._writer.note(f"cannot read the output of container {self.short_id}: {explain(err)}")
            return True
        except ENGINE_ERRORS:
            return False
        if self._detached.is_set():
            self._stream.close()
            return True
        try:
            for frame in itertools.islice(self._stream, position.count, None):
                self._take(frame)
        except (*ENGINE_ERRORS, OSError):
            return False
        return True

    def _take(self, frame: bytes) -> None:
        if self._detached.is_set():  # another daemon may follow it from here on
            return
        second, payload = split_frame(frame)
        self._writer.write(payload)
        self._cursor.advance(second, len(payload))

    def _wait_exit(self) -> tuple[int, bool]:
        """The exit code, and whether the engine gave trouble on the way (retried calls)."""
        deadline = time.monotonic() + ENGINE_PATIENCE
        for attempt in itertools.count():
            try:
                result = self.container.wait()
                return int(result.get("StatusCode", LOST_EXIT_CODE)), attempt > 0
            except NotFound:
                self._writer.note(f"container {self.short_id} was removed before its exit code was read "
                                  f"(by someone else?); recorded as exit code {LOST_EXIT_CODE}")
                return LOST_EXIT_CODE, True
            except ENGINE_ERRORS as err:
                if self._detached.is_set():
                    return LOST_EXIT_CODE, True  # discarded by the caller
                if time.monotonic() > deadline:
                    self._writer.note(f"the Docker engine did not answer for {ENGINE_PATIENCE:g}s ({explain(err)}); "
                                      f"container {self.short_id} recorded as exit code {LOST_EXIT_CODE}")
                    return LOST_EXIT_CODE, True
                time.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
        raise AssertionError("itertools.count() ended")

    def _explain_end(self, code: int) -> None:
        """Say in the log when the engine, not the job, ended it: the exit code alone does not."""
        if code == 0:
            return
        with contextlib.suppress(*ENGINE_ERRORS):
            self.container.reload()
            if (self.container.attrs.get("State") or {}).get("OOMKilled"):
                limit = (self.container.attrs.get("HostConfig") or {}).get("Memory") or 0
                size = f" of {limit // 1024**2}m" if limit else ""
                self._writer.note(f"container {self.short_id} ran out of memory (limit{size}) and was killed")

    def _remove_unless_kept(self) -> None:
        if not self.remembered.auto_remove:
            self._writer.note(f"container {self.short_id} kept (autoRemove: false); "
                              f"remove it with: docker rm {self.short_id}")
            return
        try:
            self.container.remove(force=True)
        except NotFound:
            pass
        except ENGINE_ERRORS as err:  # left behind: DockerRunner.cleanup_terminal finds it later
            log.warning("cannot remove container %s: %s", self.short_id, explain(err))

    def _close(self, code: int | None) -> None:
        complete = code is not None
        self._writer.close()
        self._cursor.close(remove=complete)
        if complete:
            self.exit_code = code
            self.ended.set()
        self._on_end(self)
