"""The web UI for tests: the API fixtures' spec tree, served with the UI mounted, and a
browser-like httpx client that logs in through the form and keeps its cookies.

Test modules import ``ui_fixture`` (and friends): ``from ui_fixtures import ui_fixture
# noqa: F401``. Every server started here is stopped in the fixture's finalizer.
Also here: the chromium check shared by the browser tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import T0, TOKEN, apply_specs, write_specs

from orchestra.api.app import create_app
from orchestra.api.server import ApiServer
from orchestra.api.settings import ApiSettings
from orchestra.store import Store, open_store
from orchestra.ui import mount

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER_ENV = "ORCHESTRA_REQUIRE_BROWSER"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def require_chromium() -> Path:
    """Debian's chromium, or a skip (a failure under ORCHESTRA_REQUIRE_BROWSER=1, as in CI)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{REQUIRE_BROWSER_ENV}=1 but {CHROMIUM} is missing (bash tests/ci/browser-setup.sh)")
    pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium)")
    raise AssertionError("unreachable")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


@dataclass
class LiveUi:
    server: ApiServer
    store: Store
    settings: ApiSettings
    spec_dir: Path
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def browser(self) -> httpx.Client:
        """A client with a cookie jar and no bearer header, like a browser (closed with the server)."""
        self.clients.append(httpx.Client(base_url=self.url, timeout=10))
        return self.clients[-1]

    def logged_in(self) -> httpx.Client:
        client = self.browser()
        if self.settings.token is None:
            return client
        form = client.get("/login")
        response = client.post("/login", data={"token": TOKEN, "csrf": csrf_of(form.text), "next": "/"})
        assert response.status_code == 303, response.text
        return client


def start_ui(root: Path, token: str | None = TOKEN, files: dict[str, str] | None = None, **overrides: Any) -> LiveUi:
    spec_dir = write_specs(root, files) if files is not None else write_specs(root)
    store = open_store(f"sqlite:///{root / 'orchestra.db'}", clock=lambda: T0)
    apply_specs(store, spec_dir)
    settings = ApiSettings(**{"token": token, "state_dir": root / ".orchestra", "spec_paths": (spec_dir,),
                              "clock": lambda: T0, "poll_interval": 0.05, **overrides})
    server = ApiServer(mount(create_app(store, settings=settings), store, settings), "127.0.0.1", 0)
    server.start()
    return LiveUi(server, store, settings, spec_dir)


@pytest.fixture(name="ui_factory")
def ui_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., LiveUi]]:
    started: list[LiveUi] = []

    def start(token: str | None = TOKEN, **overrides: Any) -> LiveUi:
        started.append(start_ui(tmp_path / f"ui{len(started)}", token, **overrides))
        return started[-1]

    yield start
    for live in started:
        for client in live.clients:
            client.close()
        live.server.stop()
        live.store.close()


@pytest.fixture(name="ui")
def ui_fixture(ui_factory: Callable[..., LiveUi]) -> LiveUi:
    return ui_factory()
