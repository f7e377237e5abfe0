"""``orchestra worker --health-port``: the health check answers from the worker's loop."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from orchestra.remote.health import HealthServer


@pytest.fixture(name="quiet")
def quiet_fixture() -> Iterator[list[float | None]]:
    yield [None]


@pytest.fixture(name="server")
def server_fixture(quiet: list[float | None]) -> Iterator[HealthServer]:
    server = HealthServer("127.0.0.1", 0, lambda: quiet[0])
    server.start()
    yield server
    server.stop()


def test_ok_while_the_loop_turns_starting_and_stopping_included(server: HealthServer, quiet: list[float | None]) -> None:
    assert httpx.get(server.url, timeout=10).json() == {"status": "ok", "loopSecondsAgo": None}  # starting
    quiet[0] = 0.4321
    answer = httpx.get(server.url, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "loopSecondsAgo": 0.432}


def test_a_loop_quiet_for_a_minute_fails_it(server: HealthServer, quiet: list[float | None]) -> None:
    quiet[0] = 75.0
    answer = httpx.get(server.url, timeout=10)
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the worker's loop has not come round for 75s"}


def test_only_the_health_path_is_served(server: HealthServer) -> None:
    assert httpx.get(server.url.replace("/health", "/"), timeout=10).status_code == 404


def test_a_taken_port_is_an_error_at_once(server: HealthServer) -> None:
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        HealthServer("127.0.0.1", port, lambda: None)
