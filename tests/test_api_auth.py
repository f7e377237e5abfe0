"""Authentication: every route but the health check needs the bearer token.

The routes are read from the app itself, so a route added later is checked
without anyone adding it here. Also: how tokens are compared and where an
API without a token may listen.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Route

from orchestra.api.auth import HEALTH_PATH, InsecureListenError, check_listen_address, is_loopback, token_matches
from tests.api_fixtures import TOKEN, LiveApi, api_factory_fixture, api_fixture  # noqa: F401

STREAMS = {"/api/v1/events", "/api/v1/runs/{run_id}/logs/stream"}


def _routes(routes: list[Any]) -> list[Route]:
    """The app's routes, flattened: FastAPI (0.165) keeps included routers as one entry each,
    holding the router (which prefixed its own paths); walk into them."""
    found: list[Route] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _routes(included.routes)
        else:
            assert isinstance(route, Route), f"a route of an unknown type: {route!r}"
            found.append(route)
    return found


def _requests(api: LiveApi) -> list[tuple[str, str, str]]:
    """(method, template, concrete path) for every route of the app, path parameters filled in."""
    run_id = api.create_run()["id"]
    values = {"name": "hello", "run_id": run_id, "schedule": "0", "worker": "remote-1"}
    found = []
    for route in _routes(api.server.app.routes):
        path = re.sub(r"{(\w+)(:\w+)?}", lambda m: values[m.group(1)], route.path)
        found += [(method, route.path, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_every_route_but_health_refuses_a_missing_or_wrong_token(api: LiveApi) -> None:
    requests = _requests(api)
    assert len(requests) >= 25  # the whole API, not an empty list
    attempts = [("no header", {}), ("wrong token", {"Authorization": "Bearer nope"}),
                ("token prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
                ("other scheme", {"Authorization": f"Basic {TOKEN}"}), ("bare token", {"Authorization": TOKEN})]
    for what, headers in attempts:
        with api.anonymous(**headers) as client:
            for method, template, path in requests:
                response = client.request(method, path, json={} if method == "POST" else None)
                if (method, template) == ("GET", HEALTH_PATH):
                    assert response.status_code == 200
                    continue
                assert response.status_code == 401, f"{method} {path} with {what}: {response.status_code}"
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["detail"]


def test_every_route_accepts_the_right_token(api: LiveApi) -> None:
    for method, template, path in _requests(api):
        if template in STREAMS:
            with api.client.stream(method, path) as response:
                assert response.status_code == 200
            continue
        response = api.client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code not in (401, 403) and response.status_code < 500, (method, path)


def test_unknown_paths_say_nothing_without_a_token(api: LiveApi) -> None:
    with api.anonymous() as client:
        assert client.get("/api/v1/secret-things").status_code == 401
        assert client.post(HEALTH_PATH).status_code == 401  # only GET of the health check is open


def test_without_a_token_the_api_is_open_and_says_so(api_factory: Any) -> None:
    api = api_factory(token=None)
    with api.anonymous() as client:
        assert client.get("/api/v1/pools").status_code == 200
        schema = client.get("/openapi.json").json()
    assert "security" not in schema and "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/api/v1/pools"]["get"]["responses"]


def test_openapi_declares_the_bearer_scheme_and_an_open_health_check(api: LiveApi) -> None:
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "ORCHESTRA_API_TOKEN"}
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"][HEALTH_PATH]["get"]["security"] == []
    assert "401" in schema["paths"]["/api/v1/runs"]["get"]["responses"]


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"Bearer  {TOKEN} ", True),
    (None, False), ("", False), ("Bearer", False), ("Bearer ", False), (f"Bearer {TOKEN}x", False),
    (f"Token {TOKEN}", False), (TOKEN, False), ("Bearer sécret", False),
])
def test_token_matches(header: str | None, ok: bool) -> None:
    assert token_matches(header, TOKEN) is ok


def test_a_non_ascii_token_matches_its_utf8_bytes() -> None:
    header = "Bearer " + "sécret".encode().decode("latin-1")  # what a server sees of UTF-8 bytes
    assert token_matches(header, "sécret")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_only_loopback_without_a_token() -> None:
    check_listen_address("127.0.0.1", None)
    check_listen_address("0.0.0.0", "a-token")
    with pytest.raises(InsecureListenError, match="without a token"):
        check_listen_address("0.0.0.0", None)


def test_the_health_check_reports_an_unreachable_store(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> Any:
        raise ConnectionRefusedError("database is down")

    monkeypatch.setattr(api.store, "change_marker", unreachable)
    with api.anonymous() as client:
        response = client.get(HEALTH_PATH)
    assert response.status_code == 503
    assert response.json() == {"detail": "store unavailable: ConnectionRefusedError"}
