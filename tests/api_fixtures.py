"""A live API for tests: a small spec tree applied to a SQLite store in
tmp_path, served by a real uvicorn server on a free loopback port (in a
thread of the test process), and an httpx client that carries the token.

Test modules import ``api_fixture`` (and friends) under the names tests ask
for: ``from tests.api_fixtures import api_fixture  # noqa: F401``. Every
server started here is stopped in the fixture's finalizer.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.api.app import create_app
from orchestra.api.server import ApiServer
from orchestra.api.settings import ApiSettings
from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.store import Store, open_store

TOKEN = "s3cret-token"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # the API's clock: upcoming runs are fixed

SPECS = {
    "pools.yaml": """
        apiVersion: orchestra/v1
        kind: WorkPool
        metadata: {name: local, labels: {team: data}}
        spec: {type: process, concurrencyLimit: 4}
        ---
        apiVersion: orchestra/v1
        kind: WorkPool
        metadata: {name: spare}
        spec: {type: process}
        ---
        apiVersion: orchestra/v1
        kind: WorkQueue
        metadata: {name: critical}
        spec: {pool: local, priority: 1}
        """,
    "hello.yaml": """
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {name: hello, labels: {team: data, tier: "1"}}
        spec:
          command: ["echo", "hello {{ parameters.who }}", "{{ parameters.times }}"]
          pool: local
          queue: critical
          parameters: {who: world, times: 1}
          parameterSchema:
            type: object
            properties:
              who: {type: string}
              times: {type: integer, minimum: 1}
            required: [who]
          schedules:
            - cron: "30 2 * * *"
              timezone: Europe/Berlin
        """,
    "etl.yaml": """
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {name: etl-nightly, labels: {team: ops}}
        spec:
          command: ["true"]
          pool: spare
          schedules:
            - interval: 6h
            - cron: "0 0 * * *"
              active: false
        """,
}


def write_specs(root: Path, files: dict[str, str] = SPECS) -> Path:
    spec_dir = root / "specs"
    spec_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (spec_dir / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return spec_dir


def apply_specs(store: Store, spec_dir: Path) -> None:
    apply_plan(store, plan_specs(store, [spec_dir], prune=True, now=T0))


@dataclass
class LiveApi:
    server: ApiServer
    store: Store
    settings: ApiSettings
    spec_dir: Path
    client: httpx.Client  # authenticated

    @property
    def url(self) -> str:
        return self.server.url

    def anonymous(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def log_path(self, run_id: str) -> Path:
        return self.settings.log_dir / f"{run_id}.log"

    def create_run(self, deployment: str = "hello", **body: Any) -> dict[str, Any]:
        response = self.client.post(f"/api/v1/deployments/{deployment}/runs", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())


def start_api(root: Path, token: str | None = TOKEN, **overrides: Any) -> LiveApi:
    """Specs applied to a new store under ``root``, served on a free loopback port."""
    spec_dir = write_specs(root)
    store = open_store(f"sqlite:///{root / 'orchestra.db'}")
    apply_specs(store, spec_dir)
    settings = ApiSettings(**{"token": token, "state_dir": root / ".orchestra", "spec_paths": (spec_dir,),
                              "clock": lambda: T0, "poll_interval": 0.05, **overrides})
    server = ApiServer(create_app(store, settings=settings), "127.0.0.1", 0)
    server.start()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=server.url, headers=headers, timeout=10)
    return LiveApi(server, store, settings, spec_dir, client)


def stop_api(live: LiveApi) -> None:
    live.client.close()
    live.server.stop()
    live.store.close()


@pytest.fixture(name="api_factory")
def api_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., LiveApi]]:
    """Start a live API over a fresh store; keyword arguments override ``ApiSettings``."""
    started: list[LiveApi] = []

    def start(token: str | None = TOKEN, **overrides: Any) -> LiveApi:
        started.append(start_api(tmp_path / f"api{len(started)}", token, **overrides))
        return started[-1]

    yield start
    for live in started:
        stop_api(live)


@pytest.fixture(name="api")
def api_fixture(api_factory: Callable[..., LiveApi]) -> LiveApi:
    return api_factory()
