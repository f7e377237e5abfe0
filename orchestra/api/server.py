"""Serve the API with uvicorn in a background thread of the daemon process.

``orchestra daemon`` makes one ``ApiServer`` next to its reconcile loop, so
both share the store (and its connection pool). The socket is bound in the
constructor, in the caller's thread: a port already taken fails there, with
an ``OSError`` the CLI turns into a clear message, rather than as a log
line in a thread while the daemon goes on without its API. Port 0 binds a
free port (tests), readable from ``port``. The only module that imports
uvicorn.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("orchestra.api")
GRACEFUL_SHUTDOWN = 3  # seconds open requests get once stopping; streams end by themselves before
# h11 refuses a request head still incomplete past its limit (16 KiB by default): whether a head
# of 20 KiB passed depended on how the network cut it up. A limit as large as any head this API
# takes makes the answer the same every time; past it, 400 and the connection closed.
MAX_REQUEST_HEAD = 64 * 1024


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self._socket = _bind(host, port)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
                                h11_max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a thread; return once uvicorn accepts requests (or raise if it died)."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="orchestra-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.01)
        log.info("API listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """End streams, stop accepting, let requests in flight finish (bounded), close the socket."""
        closing = getattr(self.app.state, "closing", None)
        if closing is not None:
            closing.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the API server did not stop within %.0fs", timeout)
        self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock
