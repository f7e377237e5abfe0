"""The UI's pages (GET) and forms (POST): parse the request, call one function, render.

Pages come from ``ui.pages``; forms call the services the API and the CLI
call (``reconcile.operations``), so a run started here is checked and
recorded exactly like ``orchestra run`` or ``POST /api/v1/.../runs``. Every
POST must carry the session's CSRF token (``ui.session``); a form that
fails server-side checks comes back with the messages next to its fields
(422), and one that succeeds redirects (303) to what it changed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from orchestra.api.errors import InvalidQuery, invalid_input_problems
from orchestra.api.routes_runs import parse_time
from orchestra.api.settings import ApiSettings
from orchestra.errors import Conflict, InvalidInput
from orchestra.reconcile.operations import cancel_run, create_manual_run, set_paused, set_schedule_paused
from orchestra.store import STATES, Store
from orchestra.ui import forms, pages
from orchestra.ui.rendering import Pages
from orchestra.ui.session import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SCOPE, SessionKeys, cookie_header, read_cookie

PAGE_PREFIXES = ("/deployments", "/runs", "/pools", "/queues", "/plan", "/logout")
# URL noun -> (the noun ``operations.set_paused`` takes, where to go after the form)
PAUSABLE = {"deployments": ("deployment", "/deployments/{name}"), "pools": ("pool", "/pools"),
            "queues": ("queue", "/pools")}
MAX_FORM_BYTES = 256 * 1024


def is_page(path: str) -> bool:
    """Paths the UI serves (and so protects with its session), as opposed to the API's."""
    return path == "/" or any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)


class FormError(Exception):
    """A POST the UI refuses before acting: no valid CSRF token, or a body too large."""


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body, after checking its CSRF token against the session's
    (with the keys ``ui.mount`` put in the app's state)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FormError("the form is too large")
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    keys: SessionKeys = request.app.state.ui_keys
    if not keys.csrf_ok(request.scope.get(SESSION_SCOPE), form.get("csrf")):
        raise FormError("this form has expired or did not come from this page; reload the page and try again")
    return form


Form = Annotated[dict[str, str], Depends(read_form)]


def page_router(store: Store, settings: ApiSettings, pages_: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _add_pages(router, store, settings, pages_)
    _add_actions(router, store, settings, pages_)
    _add_login(router, settings, pages_)
    return router


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return max(1, int(text)) if text.isdigit() else 1


def _labels(text: str | None) -> dict[str, str]:
    """``team=data, tier=1`` -> ``{"team": "data", "tier": "1"}``."""
    selector = {}
    for part in (text or "").split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            if part.strip():
                raise InvalidQuery("label", f"expected KEY=VALUE, got {part.strip()!r}")
            continue
        selector[key.strip()] = value.strip()
    return selector


def _add_pages(router: APIRouter, store: Store, settings: ApiSettings, pages_: Pages) -> None:
    chart = pages.ChartCache()

    @router.get("/")
    def overview(request: Request) -> Response:
        now = settings.clock()
        return pages_.render(request, "overview.html", now=now, **pages.overview(store, now, chart))

    @router.get("/deployments")
    def deployment_list(request: Request) -> Response:
        now, label = settings.clock(), _query(request, "label")
        filters = {"name": _query(request, "name"), "pool": _query(request, "pool"), "label": label}
        try:
            data = pages.deployments(store, now, name=filters["name"], pool=filters["pool"], labels=_labels(label),
                                     page=_page_number(request))
        except InvalidQuery as exc:
            return pages_.render(request, "error.html", 422, title="Invalid filter", message=exc.message)
        return pages_.render(request, "deployments.html", now=now, filters=filters, query=query_string(filters),
                             **data)

    @router.get("/deployments/{name}")
    def deployment_page(request: Request, name: str) -> Response:
        form = forms.run_form(store.get_resource("Deployment", name).spec)
        return _deployment_response(request, store, settings, pages_, name, form)

    @router.get("/runs")
    def run_list(request: Request) -> Response:
        state = _query(request, "state")
        raw = {k: _query(request, k) for k in ("state", "deployment", "pool", "since", "until")}
        try:
            filters = pages.RunFilters(state=state if state in STATES else None, deployment=raw["deployment"],
                                       pool=raw["pool"], since=parse_time(raw["since"], "since"),
                                       until=parse_time(raw["until"], "until"))
            data = pages.run_page(store, filters, _query(request, "cursor"))
        except InvalidQuery as exc:
            return pages_.render(request, "error.html", 422, title="Invalid filter",
                                 message=f"{exc.name}: {exc.message}")
        return pages_.render(request, "runs.html", now=settings.clock(), filters=raw, states=STATES,
                             query=query_string(raw), **data)

    @router.get("/runs/{run_id}")
    def run_page(request: Request, run_id: str) -> Response:
        return pages_.render(request, "run.html", now=settings.clock(), **pages.run_detail(store, settings, run_id))

    @router.get("/pools")
    def pool_list(request: Request) -> Response:
        return pages_.render(request, "pools.html", now=settings.clock(), **pages.pools(store, settings.clock()))

    @router.get("/pools/{name}")
    def pool_page(request: Request, name: str) -> Response:
        data = pages.pools(store, settings.clock(), only=name, shown=500)
        return pages_.render(request, "pools.html", now=settings.clock(), **data)

    @router.get("/plan")
    def plan_page(request: Request) -> Response:
        return pages_.render(request, "plan.html", now=settings.clock(), **pages.plan(store, settings))


def _deployment_response(request: Request, store: Store, settings: ApiSettings, pages_: Pages, name: str,
                         form: forms.RunForm, status: int = 200) -> Response:
    """The Deployment page with ``form`` as its Run form (fresh, or with the errors of a submission)."""
    now = settings.clock()
    data = pages.deployment(store, now, name, _query(request, "cursor"))
    return pages_.render(request, "deployment.html", status, now=now, form=form, **data)


def _add_actions(router: APIRouter, store: Store, settings: ApiSettings, pages_: Pages) -> None:
    """POST handlers are plain functions (run in a worker thread, off the event loop); the
    form is read and its CSRF token checked first, by the ``Form`` dependency."""

    @router.post("/deployments/{name}/run")
    def start_run(request: Request, name: str, submitted: Form) -> Response:
        resource = store.get_resource("Deployment", name)
        form = forms.run_form(resource.spec)
        parameters, job_variables = forms.parse_run_form(form, submitted)
        if not forms.has_errors(form):
            try:
                run = create_manual_run(store, name, parameters=parameters, job_variables=job_variables,
                                        now=settings.clock(), trigger="ui")
                return RedirectResponse(f"/runs/{run.id}", status_code=303)
            except InvalidInput as exc:
                forms.attach_problems(form, invalid_input_problems(exc))
        if request.headers.get("x-orchestra-fragment") == "run-form":  # orchestra.js replaces the form in place
            return pages_.render(request, "run_form.html", 422, form=form, resource=resource)
        return _deployment_response(request, store, settings, pages_, name, form, 422)

    @router.post("/runs/{run_id}/cancel")
    def cancel(run_id: str, _: Form) -> Response:
        return RedirectResponse(f"/runs/{cancel_run(store, run_id).id}", status_code=303)

    @router.post("/deployments/{name}/schedules")
    def pause_or_resume_schedule(name: str, form: Form) -> Response:
        set_schedule_paused(store, name, form.get("schedule", ""), form.get("action") == "pause")
        return RedirectResponse(f"/deployments/{quote(name)}", status_code=303)

    for noun, (singular, back) in PAUSABLE.items():
        _add_pause_route(router, store, noun, singular, back)


def _add_pause_route(router: APIRouter, store: Store, noun: str, singular: str, back: str) -> None:
    @router.post(f"/{noun}/{{name}}/{{action}}")
    def pause_or_resume(name: str, action: Literal["pause", "resume"], form: Form) -> Response:
        set_paused(store, singular, name, action == "pause")
        return RedirectResponse(_back(form.get("next"), back.format(name=quote(name))), status_code=303)


def refused(pages_: Pages, request: Request, exc: Exception) -> Response:
    """A form refused before acting (403), or whose action contradicts the state (409)."""
    status = 409 if isinstance(exc, Conflict) else 403
    title = "Not possible now" if status == 409 else "Form refused"
    return pages_.render(request, "error.html", status, title=title, message=str(exc))


def _back(target: str | None, fallback: str) -> str:
    """Only a path on this site: never an absolute URL or ``//host`` (an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


def _add_login(router: APIRouter, settings: ApiSettings, pages_: Pages) -> None:
    @router.get("/login")
    def login_form(request: Request) -> Response:
        if not pages_.keys.login_required:
            return RedirectResponse("/", status_code=303)
        return _login_page(request, pages_, error="")

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = (await request.body())[:MAX_FORM_BYTES]
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        if not pages_.keys.csrf_ok(read_cookie(request.scope, LOGIN_COOKIE), form.get("csrf")):
            return _login_page(request, pages_, error="The login form expired; please try again.", status=403)
        if settings.token is not None and not hmac.compare_digest(form.get("token", "").strip().encode(),
                                                                  settings.token.encode()):
            return _login_page(request, pages_, error="That token is not the API's token.", status=401)
        _, cookie = pages_.keys.issue()
        response = RedirectResponse(_back(form.get("next"), "/"), status_code=303)
        secure = request.url.scheme == "https"
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, cookie, secure=secure))
        response.headers.append("set-cookie", cookie_header(LOGIN_COOKIE, "", secure=secure, max_age=0))
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await read_form(request)
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", secure=request.url.scheme == "https",
                                                            max_age=0))
        return response


def _login_page(request: Request, pages_: Pages, *, error: str, status: int = 200) -> Response:
    """The login form, with a fresh login nonce (its CSRF token) in a short-lived cookie."""
    nonce, _ = pages_.keys.issue()
    response = pages_.render(request, "login.html", status, error=error, login_csrf=pages_.keys.csrf(nonce),
                             next=_back(request.query_params.get("next"), "/"))
    response.headers.append("set-cookie", cookie_header(LOGIN_COOKIE, nonce, secure=request.url.scheme == "https",
                                                        max_age=3600))
    return response


def query_string(params: Mapping[str, str | None]) -> str:
    """The filters of a list as a query string, for its pager links."""
    return urlencode({k: v for k, v in params.items() if v})
