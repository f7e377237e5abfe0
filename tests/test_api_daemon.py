"""The API as ``orchestra daemon`` serves it: a real daemon process, real HTTP.

A run triggered through the API is executed by the daemon's own worker and
its output read back through the API; the daemon refuses to serve an open
API beyond loopback, and stops its API when it stops.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.daemon_fixtures import DaemonProcess, daemon_factory, deployment, wait_for, workdir  # noqa: F401

Factory = Callable[..., DaemonProcess]
TOKEN = "daemon-token"
LISTENING = re.compile(r"API listening on (http://\S+)")


def _url(daemon: DaemonProcess) -> str:
    found = wait_for(lambda: LISTENING.search(daemon.output()) or (daemon.proc and daemon.proc.poll() is not None),
                     timeout=30, message="the API to listen")
    assert isinstance(found, re.Match), daemon.output()
    return found.group(1)


def _with_token(daemon: DaemonProcess) -> DaemonProcess:
    daemon.env["ORCHESTRA_API_TOKEN"] = TOKEN
    return daemon


def test_a_run_triggered_through_the_api_runs_and_its_log_is_served(workdir: Path, daemon_factory: Factory) -> None:
    (workdir / "specs" / "greet.yaml").write_text(deployment("greet", """
command: ["echo", "hello {{ parameters.who }}"]
parameters: {who: world}
"""))
    daemon = _with_token(daemon_factory("--port", "0")).start()
    url = _url(daemon)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as api:
        assert httpx.get(f"{url}/api/v1/health").json()["status"] == "ok"
        wait_for(lambda: api.get("/api/v1/deployments/greet").status_code == 200, message="specs applied")
        run = api.post("/api/v1/deployments/greet/runs", json={"parameters": {"who": "api"}}).json()
        final = wait_for(lambda: (r := api.get(f"/api/v1/runs/{run['id']}").json())["state"] in
                         {"Completed", "Failed", "Crashed"} and r, timeout=30, message="the run to end")
        assert final["state"] == "Completed", final
        assert final["job"]["command"] == ["echo", "hello api"]
        page = api.get(f"/api/v1/runs/{run['id']}/logs").json()
        assert "\nhello api\n" in page["text"] and page["eof"]
        assert api.get(f"/api/v1/runs/{run['id']}/logs/stream").text == page["text"]
        assert httpx.get(f"{url}/api/v1/runs").status_code == 401
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0
    try:
        refused = httpx.get(f"{url}/api/v1/health", timeout=2).status_code != 200
    except httpx.TransportError:
        refused = True
    assert refused, "the API still answers after the daemon stopped"


def test_no_token_no_listening_beyond_loopback(daemon_factory: Factory) -> None:
    daemon = daemon_factory("--host", "0.0.0.0", "--port", "0").start()
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 1
    assert "refusing to serve the API on 0.0.0.0 without a token" in daemon.output()


def test_with_a_token_file_it_listens_on_all_addresses(workdir: Path, daemon_factory: Factory) -> None:
    (workdir / "token").write_text(f"{TOKEN}\n")
    daemon = daemon_factory("--host", "0.0.0.0", "--port", "0", "--api-token-file", str(workdir / "token")).start()
    port = _url(daemon).rsplit(":", 1)[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
        assert api.get("/api/v1/pools").status_code == 401
        assert api.get("/api/v1/pools", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert daemon.stop() == 0


def test_no_api_serves_nothing(daemon_factory: Factory) -> None:
    daemon = daemon_factory("--no-api").start()
    daemon.ready()
    assert daemon.stop() == 0
    assert "API listening" not in daemon.output()


def test_a_taken_port_is_a_clear_error(daemon_factory: Factory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        daemon = daemon_factory("--port", str(port)).start()
        assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 1
    assert f"cannot serve the API on 127.0.0.1:{port}" in daemon.output()
