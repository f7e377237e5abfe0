"""The Jinja2 environment of the UI: templates shipped in the package, escaping always on.

Autoescaping is on for every template, so names, labels, reasons and log
lines from the store reach the page as text, never as markup. Undefined
names fail loudly (``StrictUndefined``) rather than render as empty.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from orchestra.ui.session import SESSION_SCOPE, SessionKeys
from orchestra.ui.times import duration_text, time_html

STATE_CLASSES = {
    "Scheduled": "scheduled", "Pending": "pending", "Running": "running", "Cancelling": "cancelling",
    "Completed": "completed", "Failed": "failed", "Crashed": "crashed", "Cancelled": "cancelled",
    "Skipped": "skipped", "Missed": "missed",
}


def make_environment(version: str, assets: str) -> Environment:
    env = Environment(loader=PackageLoader("orchestra.ui", "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(time=time_html, duration=duration_text, version=version, assets=assets,
                       state_class=state_class)
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return env


def state_class(state: str) -> str:
    return "state-" + STATE_CLASSES.get(state, "other")


class Pages:
    """Renders a template with what every page needs (its CSRF token, whether login is on)."""

    def __init__(self, env: Environment, keys: SessionKeys) -> None:
        self.env = env
        self.keys = keys

    def csrf(self, request: Request) -> str:
        nonce = request.scope.get(SESSION_SCOPE)
        return self.keys.csrf(nonce) if nonce else ""

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            request=request, csrf=self.csrf(request), login_required=self.keys.login_required,
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


# The UI loads nothing from elsewhere and never needs to be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
