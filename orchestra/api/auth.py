"""Bearer-token authentication, and the rule about where the API may listen.

``BearerAuth`` is ASGI middleware around the whole app rather than a
per-route dependency: a route added later is protected without anyone
remembering to protect it (fail closed), and unknown paths do not tell an
unauthenticated caller which paths exist. Only ``GET /api/v1/health`` is
open. Tokens are compared with ``hmac.compare_digest`` so the time taken
says nothing about how much of a guess was right.

``check_listen_address`` is called by ``orchestra daemon`` before it binds:
without a token, the API may only listen on a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

HEALTH_PATH = "/api/v1/health"
OPEN_ROUTES = frozenset({("GET", HEALTH_PATH), ("HEAD", HEALTH_PATH)})
# Set in the scope by an outer middleware that authenticated the request by other means:
# the web UI's session cookie (``orchestra.ui.session``), which browsers send where they
# cannot send a bearer header (EventSource, links, forms). Headers cannot set scope keys.
AUTHENTICATED = "orchestra.authenticated"


class InsecureListenError(ValueError):
    """Listening beyond this machine without a token would open the API to anyone."""


def is_loopback(host: str) -> bool:
    """``localhost`` and loopback IP literals; any other name counts as reachable from outside."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise InsecureListenError(
            f"refusing to serve the API on {host} without a token: anyone who can reach it could run jobs. "
            "Set ORCHESTRA_API_TOKEN or --api-token-file, or listen on 127.0.0.1.")


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # The header was decoded as latin-1 (byte for byte): compare the raw bytes with the UTF-8 token.
    return hmac.compare_digest(given.strip().encode("latin-1"), token.encode())


class BearerAuth:
    """Refuse every request without the right bearer token, except the health check."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] == "lifespan" or self._is_open(scope) or scope.get(AUTHENTICATED):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _refuse(send, wrong=header is not None)

    @staticmethod
    def _is_open(scope: Scope) -> bool:
        return scope["type"] == "http" and (scope["method"], scope["path"]) in OPEN_ROUTES


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, *, wrong: bool) -> None:
    challenge = 'Bearer realm="orchestra"' + (', error="invalid_token"' if wrong else "")
    detail = "invalid bearer token" if wrong else "missing bearer token (Authorization: Bearer <token>)"
    body = json.dumps({"detail": detail}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode()),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": 401, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
