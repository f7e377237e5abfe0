"""Schemathesis over the whole API: generated requests, real HTTP, a live server.

Every operation of ``/openapi.json`` gets generated requests, valid and
invalid; no response may be a 5xx, and every response must match what the
schema says of its status code, content type, headers and body. The two
streaming operations are left out (a stream of a live run never ends by
itself) and have their own tests in test_api_streams.py. Examples are
bounded so that the whole run stays well under a minute.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orchestra.api.server import MAX_REQUEST_HEAD
from tests.api_fixtures import TOKEN, LiveApi, start_api, stop_api

STREAMING = ("/api/v1/events", "/api/v1/runs/{run_id}/logs/stream")
# Bodies that are spec documents (or schedules) are checked as spec files are: references
# to pools and queues, cron, zones, a trial render. The schema cannot state those, so a 422
# for a generated body is an answer there, not a failure.
SPEC_BODIES = {("POST", "/api/v1/deployments"), ("POST", "/api/v1/queues"), ("PUT", "/api/v1/deployments/{name}"),
               ("PUT", "/api/v1/queues/{name}"), ("POST", "/api/v1/deployments/{name}/schedules")}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 20  # per operation and generation mode
HEAD_LIMIT = MAX_REQUEST_HEAD - 8 * 1024  # generated request heads stay under the server's limit, with room


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    live = start_api(tmp_path_factory.mktemp("fuzz"))
    yield live
    stop_api(live)


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    # The bearer scheme is configured, not generated: schemathesis then sends the token
    # with every case instead of fuzzing the Authorization header (test_api_auth.py does that).
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}})
    loaded = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json", headers=AUTH, config=config)
    return loaded.exclude(path=list(STREAMING))


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, path: dict[str, str] | None = None,
          strict: bool = True) -> None:
    # Driven by hand rather than by ``schema.parametrize()``: schemathesis' lazy
    # pytest loader (needed for a schema served by a fixture) fails on pytest 9.
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # A request head beyond the HTTP server's limit is refused before the app sees it:
        # 400, and the connection closed with the rest unread, which the client may see as
        # a reset. That is the HTTP layer's answer (tested on its own above), not one the
        # schema describes; generated lists of long strings reach it now and then.
        assume(_head_size(case) < HEAD_LIMIT)
        # A cursor is opaque: a well-formed string that is not one this API made is
        # rightly refused (422), which schemathesis cannot know from the schema.
        skip = [positive_data_acceptance] if not strict or "cursor" in (case.query or {}) else []
        case.call_and_validate(excluded_checks=skip)

    check()


def _head_size(case: schemathesis.Case) -> int:
    """About how many bytes the request line and headers of ``case`` take (percent-encoded)."""
    path = "/".join(quote(str(value)) for value in (case.path_parameters or {}).values())
    headers = sum(len(str(key)) + len(str(value)) + 4 for key, value in (case.headers or {}).items())
    return len(case.path) + len(path) + len(urlencode(case.query or {}, doseq=True)) + headers


def _send_with_a_pause(live_api: LiveApi, head: bytes) -> bytes:
    """Send ``head`` but its last bytes, let the server read that much, then the rest, as a slow
    network would; the answer's first bytes. (A pause, not an event: the server's read of an
    incomplete head is what is being tested, and nothing tells when it happened.)"""
    host, port = live_api.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        try:
            conn.sendall(head[:-4])
            time.sleep(0.3)
            conn.sendall(head[-4:])
        except OSError:  # refused before the end: the answer is already there
            pass
        return conn.recv(64)


def test_request_heads_are_read_whole_up_to_the_limit_and_refused_beyond(live_api: LiveApi) -> None:
    def head(names: int) -> bytes:
        query = "&".join(f"name=deployment-{i:06d}" for i in range(names))
        return (f"GET /api/v1/workers/w1/resources?kind=Deployment&{query} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()

    under, over = head(1000), head(4000)
    assert 16 * 1024 < len(under) < MAX_REQUEST_HEAD < len(over)
    assert _send_with_a_pause(live_api, under).startswith(b"HTTP/1.1 200 ")  # past h11's own 16 KiB
    assert _send_with_a_pause(live_api, over).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_conforms_to_its_schema(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    failures, fuzzed = [], 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        fuzzed += 1
        try:
            _fuzz(operation, mode, strict=(operation.method.upper(), operation.path) not in SPEC_BODIES)
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing can be made invalid (the health check)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}:\n{exc}")
    assert fuzzed >= 20
    assert not failures, "\n\n".join(failures)


def test_requests_to_existing_resources_conform(live_api: LiveApi, api_schema: schemathesis.BaseSchema) -> None:
    """Generated names are almost never the names of real resources: fuzz queries and
    bodies (run parameters and job variables above all) against ones that exist."""
    names = {"pools": "local", "queues": "critical", "deployments": "hello"}
    run_id = live_api.create_run()["id"]
    failures, fuzzed = [], 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        segments = operation.path.split("/")
        path = {"name": names[segments[3]]} if "{name}" in segments else {"run_id": run_id} if "{run_id}" in segments else None
        if path is None:
            continue
        fuzzed += 1
        try:
            # Each deployment has its own parameter and job variable schemas, which the
            # OpenAPI cannot state: a 422 for a generated body is an answer, not a failure.
            _fuzz(operation, GenerationMode.POSITIVE, path, strict=False)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label} {path}:\n{exc}")
    assert fuzzed >= 14
    assert not failures, "\n\n".join(failures)
    assert live_api.store.list_runs(deployment="hello", limit=5), "no run was created: the bodies were all refused"


def test_only_the_streams_are_left_out(live_api: LiveApi, api_schema: schemathesis.BaseSchema) -> None:
    paths = live_api.client.get("/openapi.json").json()["paths"]
    fuzzed = {result.ok().path for result in api_schema.get_all_operations()}
    assert fuzzed == set(paths) - set(STREAMING)
