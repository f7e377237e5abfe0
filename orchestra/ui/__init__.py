"""The web UI: server-rendered pages over the same store and services as the API.

``mount(app, store, settings)`` adds the UI to an app made by
``api.app.create_app``: its pages at ``/``, its static files (one CSS and one
JavaScript file, shipped in the package: no CDN, no build step) at
``/static``, and the session middleware that lets a browser in with a cookie
after the login form (``ui.session``). ``orchestra daemon`` mounts it; an app
without it keeps the API's placeholder page at ``/``.

A layer above ``orchestra.api``: it reuses the API's shapes, views and error
mapping, never the other way round.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from orchestra.api.app import version
from orchestra.api.settings import ApiSettings
from orchestra.errors import Conflict, NotFound
from orchestra.store import Store
from orchestra.ui.rendering import Pages, make_environment
from orchestra.ui.routes import FormError, is_page, page_router, refused
from orchestra.ui.session import SessionKeys, SessionMiddleware

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["mount"]


def mount(app: FastAPI, store: Store, settings: ApiSettings) -> FastAPI:
    """Serve the UI from ``app`` (returned, for chaining); call before it serves a request."""
    keys = SessionKeys.for_token(settings.token)
    pages_ = Pages(make_environment(version(), asset_version(STATIC_DIR)), keys)
    app.state.ui_keys = keys  # for the CSRF check of every form (``routes.read_form``)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/"]  # the placeholder
    app.include_router(page_router(store, settings, pages_))
    app.mount("/static", VersionedStatic(directory=STATIC_DIR), name="static")
    _html_errors_on_pages(app, pages_)
    app.add_middleware(SessionMiddleware, keys=keys, is_page=is_page)
    return app


def asset_version(directory: Path) -> str:
    """A digest of the static files: their URLs carry it, so browsers may cache them for good."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


class VersionedStatic(StaticFiles):
    """Static files; asked for with ``?v=<asset_version>`` they are cached without revalidation."""

    def file_response(self, full_path: Any, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if scope.get("query_string", b"").startswith(b"v="):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def _html_errors_on_pages(app: FastAPI, pages_: Pages) -> None:
    """A missing run or a refused form is a page for a person on UI paths, JSON on the API's."""
    for error in (NotFound, Conflict):
        app.add_exception_handler(error, _page_or_api(pages_, app.exception_handlers[error]))

    async def form_refused(request: Request, exc: Exception) -> Response:
        return refused(pages_, request, exc)

    app.add_exception_handler(FormError, form_refused)


def _page_or_api(pages_: Pages, api_handler: Callable[..., Any]) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return await api_handler(request, exc)
        if isinstance(exc, NotFound):
            return pages_.render(request, "error.html", 404, title="Not found", message=str(exc))
        return refused(pages_, request, exc)

    return handler
