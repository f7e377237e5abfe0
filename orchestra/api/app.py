"""``create_app``: the HTTP API over one store, as a FastAPI application.

The daemon (``cli.daemon_cmd``) builds it over the store it already uses
and serves it with ``api.server.ApiServer``; tests build it over a store in
a temporary directory. Everything under ``/api/v1`` is JSON; routes live in
``routes_*`` modules, each a thin layer over the services the CLI calls.
Authentication wraps the whole app (``api.auth.BearerAuth``); only
``GET /api/v1/health`` is open.
"""

from __future__ import annotations

import functools
import importlib.metadata
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from orchestra.api import errors
from orchestra.api.auth import HEALTH_PATH, BearerAuth
from orchestra.api.feed import EventFeed, StoreEventSource
from orchestra.api.routes_events import events_router
from orchestra.api.routes_logs import logs_router
from orchestra.api.routes_manage import manage_router
from orchestra.api.routes_resources import resources_router
from orchestra.api.routes_runs import runs_router
from orchestra.api.routes_workers import workers_router
from orchestra.api.routes_specs import specs_router
from orchestra.api.schemas import Health, Problem
from orchestra.api.settings import ApiSettings
from orchestra.api.strict import reject_unknown_query
from orchestra.reconcile.presence import LOOP_STALLED
from orchestra.store import Store

TITLE = "orchestra"
DESCRIPTION = ("Declarative workflow orchestration: resources, runs, logs and run events. "
               "See docs/api.md for examples.")
PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orchestra</title></head>
<body><h1>orchestra</h1><p>The web UI is not here yet. The API is under <code>/api/v1</code>;
its description is <a href="/openapi.json">/openapi.json</a> (and <a href="/docs">/docs</a>).</p></body></html>
"""


@functools.cache
def version() -> str:
    try:
        return importlib.metadata.version("orchestra")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def create_app(store: Store, *, settings: ApiSettings) -> FastAPI:
    closing = threading.Event()  # set by ApiServer.stop: streams end instead of holding shutdown up
    app = FastAPI(title=TITLE, version=version(), description=DESCRIPTION, redoc_url=None)
    app.state.closing = closing
    errors.install(app)
    denied = errors.UNAUTHORIZED if settings.token else {}
    feed = EventFeed(StoreEventSource(store), interval=settings.poll_interval)
    strict = [Depends(reject_unknown_query)]
    app.include_router(_health_router(store, settings.daemon_loop), dependencies=strict, responses=errors.INVALID)
    for router in (resources_router(store, settings), manage_router(store, settings),
                   runs_router(store, settings), specs_router(store, settings),
                   logs_router(store, settings, closing=closing),
                   events_router(feed, interval=settings.poll_interval, closing=closing),
                   workers_router(store, settings)):
        app.include_router(router, dependencies=strict, responses={**errors.INVALID, **denied})
    app.add_api_route("/", _placeholder, include_in_schema=False, response_class=HTMLResponse)
    app.add_middleware(BearerAuth, token=settings.token)
    app.openapi = lambda: _openapi(app, secured=settings.token is not None)  # type: ignore[method-assign]
    return app


def _health_router(store: Store, daemon_loop: Callable[[], float | None] | None) -> APIRouter:
    """The check a supervisor (a Kubernetes liveness probe, a load balancer) polls: it fails
    when the store cannot be reached, and in a daemon when its loop has not come round for
    ``LOOP_STALLED`` seconds (a hang: nothing else would show it, the API answering on)."""
    router = APIRouter(prefix="/api/v1", tags=["health"])

    @router.get(HEALTH_PATH.removeprefix("/api/v1"), response_model=Health,
                responses={503: {"model": Problem, "description": "The store cannot be reached, or the "
                                 f"daemon's loop has not come round for {LOOP_STALLED:.0f} s."}},
                summary="Whether the server, its store and the daemon's loop answer (no token needed)")
    def health() -> Any:
        try:
            store.change_marker()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is "unavailable"
            return JSONResponse({"detail": f"store unavailable: {type(exc).__name__}"}, status_code=503)
        quiet = daemon_loop() if daemon_loop is not None else None
        if quiet is not None and quiet > LOOP_STALLED:
            return JSONResponse({"detail": f"the daemon's loop has not come round for {quiet:.0f}s"},
                                status_code=503)
        return {"status": "ok", "version": version(), "loopSecondsAgo": None if quiet is None else round(quiet, 3)}

    return router


async def _placeholder() -> str:
    return PLACEHOLDER


def _openapi(app: FastAPI, *, secured: bool) -> dict[str, Any]:
    """FastAPI's schema, plus the bearer scheme when a token is required (health stays open)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _errors_are_json(schema)
    if secured:
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "ORCHESTRA_API_TOKEN"}
        schema["security"] = [{"bearer": []}]
        schema["paths"][HEALTH_PATH]["get"]["security"] = []
    app.openapi_schema = schema
    return schema


def _errors_are_json(schema: dict[str, Any]) -> None:
    """Errors are JSON on every route; FastAPI documents them in the route's media type
    (text/plain for the log stream, text/event-stream for events)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content") or {}
                if status[0] in "45" and content and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}
