"""``orchestra worker --health-port``: the health check a supervisor polls.

A worker serves no API, so a Kubernetes liveness probe or a load balancer has
nothing to ask whether its loop still turns. This is the smallest server that
answers: ``GET /health`` is 200 with ``{"status": "ok", "loopSecondsAgo": ...}``
while the loop came round within ``LOOP_STALLED`` seconds (or is starting or
stopping), else 503, the daemon's rule for its own loop. A daemon that cannot be
reached does not fail it: restarting the worker would not bring the daemon back.
The standard library's threaded HTTP server is enough for one small route.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestra.reconcile import presence

log = logging.getLogger("orchestra.worker")


class HealthServer:
    def __init__(self, host: str, port: int, loop_quiet_for: Callable[[], float | None]) -> None:
        """Binds at once (``OSError`` if the address is taken); serves after ``start``."""
        self._server = ThreadingHTTPServer((host, port), _handler(loop_quiet_for))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="orchestra-health", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/health"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def health(loop_quiet_for: Callable[[], float | None]) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``GET /health``."""
    quiet = loop_quiet_for()
    if quiet is not None and quiet > presence.LOOP_STALLED:
        return 503, {"detail": f"the worker's loop has not come round for {quiet:.0f}s"}
    return 200, {"status": "ok", "loopSecondsAgo": None if quiet is None else round(quiet, 3)}


def _handler(loop_quiet_for: Callable[[], float | None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            code, body = health(loop_quiet_for) if self.path == "/health" else (404, {"detail": "not found"})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log.debug("health check: " + format, *args)

    return Handler
