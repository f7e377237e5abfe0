"""Browser sessions for the web UI: a signed cookie instead of a bearer header, and CSRF tokens.

A browser cannot put ``Authorization: Bearer`` on a link, a form or an
``EventSource``, so after the login form has checked the API token the UI
keeps a session cookie: ``nonce.expiry.signature``, signed with HMAC under a
key derived from the token. The token itself never leaves the login request,
a new token ends every session, and nothing is stored on the server (so a
restart keeps people logged in). The cookie is HttpOnly (scripts cannot read
it) and ``SameSite=Strict`` (other sites cannot make the browser send it).

Every POST form also carries a CSRF token, HMAC(key, "csrf|" + nonce): only a
page the UI rendered for this session knows it. Without an API token the UI
needs no login, but it still gives each browser a session (under a random
per-process key) so that its forms carry CSRF tokens too.

``SessionMiddleware`` sits outside ``api.auth.BearerAuth``: a valid session
marks the request authenticated (scope key ``api.auth.AUTHENTICATED``) for
UI pages and for GET requests to ``/api/v1`` (events, log streams). Writes to
the API still need the bearer header; UI pages asked for without a session
redirect to the login form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.api.auth import AUTHENTICATED

SESSION_COOKIE = "orchestra_session"
LOGIN_COOKIE = "orchestra_login"
SESSION_SCOPE = "orchestra.ui_session"  # the verified session's nonce, for CSRF checks
SESSION_SECONDS = 12 * 3600
PUBLIC_PREFIXES = ("/login", "/static/")
API_DESCRIPTION = frozenset({"/docs", "/openapi.json"})  # readable with a session, like GET /api/v1


@dataclass(frozen=True)
class SessionKeys:
    """Signs session cookies and derives CSRF tokens; ``token`` None: no login needed."""

    key: bytes
    login_required: bool
    clock: Callable[[], float] = time.time

    @classmethod
    def for_token(cls, token: str | None) -> SessionKeys:
        if token is None:
            return cls(secrets.token_bytes(32), login_required=False)
        return cls(hmac.new(b"orchestra-ui-session", token.encode(), hashlib.sha256).digest(), login_required=True)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str]:
        """A new session: (its nonce, the cookie value)."""
        nonce = secrets.token_urlsafe(18)
        expires = str(int(self.clock()) + SESSION_SECONDS)
        return nonce, f"{nonce}.{expires}.{self._sign('session', nonce + '.' + expires)}"

    def verify(self, cookie: str | None) -> str | None:
        """The nonce of a valid, unexpired session cookie, else None."""
        nonce, _, rest = (cookie or "").partition(".")
        expires, _, signature = rest.partition(".")
        if not (nonce and expires.isdigit() and signature):
            return None
        if not hmac.compare_digest(signature, self._sign("session", f"{nonce}.{expires}")):
            return None
        return nonce if int(expires) > self.clock() else None

    def csrf(self, nonce: str) -> str:
        return self._sign("csrf", nonce)

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        return bool(nonce and given) and hmac.compare_digest(self.csrf(nonce or ""), given or "")


def cookie_header(name: str, value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """``Set-Cookie`` for a UI cookie: HttpOnly, SameSite=Strict, whole site."""
    flags = "; Secure" if secure else ""
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{flags}"


def read_cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(bytes(value).decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is no session
                return None
            if name in jar:
                return jar[name].value
    return None


def has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers", ()))


class SessionMiddleware:
    """Authenticate browsers by session cookie; send UI pages without one to the login form."""

    def __init__(self, app: ASGIApp, keys: SessionKeys, is_page: Callable[[str], bool]) -> None:
        self.app = app
        self.keys = keys
        self.is_page = is_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        nonce = self.keys.verify(read_cookie(scope, SESSION_COOKIE))
        if nonce:
            scope[SESSION_SCOPE] = nonce
        if path.startswith(PUBLIC_PREFIXES):
            scope[AUTHENTICATED] = True
        elif path.startswith("/api/") or path in API_DESCRIPTION:
            if nonce and method in ("GET", "HEAD"):
                scope[AUTHENTICATED] = True
        elif self.is_page(path):
            if nonce:
                scope[AUTHENTICATED] = True
            elif not self.keys.login_required:
                await self._new_anonymous_session(scope, receive, send)
                return
            elif method in ("GET", "HEAD") and not has_header(scope, b"authorization"):
                await _redirect_to_login(scope, send)
                return
        await self.app(scope, receive, send)

    async def _new_anonymous_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No token, no login: give this browser a session so its forms carry CSRF tokens."""
        nonce, cookie = self.keys.issue()
        scope[SESSION_SCOPE] = nonce
        scope[AUTHENTICATED] = True
        header = cookie_header(SESSION_COOKIE, cookie, secure=scope.get("scheme") == "https").encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _redirect_to_login(scope: Scope, send: Send) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    location = "/login?next=" + quote(target, safe="")
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
