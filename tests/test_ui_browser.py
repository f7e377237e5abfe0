"""The web UI end to end: a real ``orchestra daemon`` subprocess, driven in headless Chromium.

Debian's ``/usr/bin/chromium`` through Playwright (never a downloaded
browser); skipped when it is missing, failed instead under
``ORCHESTRA_REQUIRE_BROWSER=1`` (CI). One daemon and one browser serve the
whole module; each test gets a fresh browser context that logs in through
the form. Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_fixtures import DaemonProcess
from ui_fixtures import SCREENSHOTS, require_chromium
from waiting import wait_for

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token"
LISTENING = re.compile(r"API listening on (http://\S+)")
PY = "import sys, time; print('hello', sys.argv[1], flush=True); time.sleep(float(sys.argv[2])); print('done')"
SPECS = {
    "pool.yaml": """
        apiVersion: orchestra/v1
        kind: WorkPool
        metadata: {name: local}
        spec: {type: process, concurrencyLimit: 4}
        ---
        apiVersion: orchestra/v1
        kind: WorkQueue
        metadata: {name: narrow}
        spec: {pool: local, priority: 5, concurrencyLimit: 1}
        """,
    "greet.yaml": f"""
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {{name: greet, labels: {{team: web}}}}
        spec:
          command: ["python3", "-c", "{PY}", "{{{{ parameters.who }}}}", "{{{{ parameters.seconds }}}}"]
          pool: local
          parameters: {{who: world, seconds: 1, tone: plain}}
          parameterSchema:
            type: object
            properties:
              who: {{type: string, description: Who to greet}}
              seconds: {{type: number, minimum: 0, exclusiveMaximum: 30, description: How long to wait}}
              tone: {{enum: [plain, loud]}}
            required: [who]
        """,
    "sleeper.yaml": """
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {name: sleeper}
        spec:
          command: ["python3", "-c", "import time; print('sleeping', flush=True); time.sleep(300)"]
          pool: local
        ---
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {name: one-at-a-time}
        spec:
          command: ["python3", "-c", "import time; time.sleep(300)"]
          pool: local
          queue: narrow
        """,
    "nightly.yaml": """
        apiVersion: orchestra/v1
        kind: Deployment
        metadata: {name: nightly-report, labels: {team: data}}
        spec:
          command: ["echo", "report"]
          pool: local
          schedules:
            - cron: "30 2 * * *"
              timezone: Europe/Berlin
            - interval: 6h
        """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    require_chromium()
    workdir = tmp_path_factory.mktemp("ui-e2e")
    (workdir / "specs").mkdir()
    for name, text in SPECS.items():
        (workdir / "specs" / name).write_text(textwrap.dedent(text).lstrip("\n"))
    process = DaemonProcess(workdir, f"sqlite:///{workdir / 'orchestra.db'}")
    process.env["ORCHESTRA_API_TOKEN"] = TOKEN
    process.start()
    try:
        found = wait_for(lambda: LISTENING.search(process.output()) or (process.proc and process.proc.poll() is not None),
                         timeout=30, message="the daemon's API")
        assert isinstance(found, re.Match), process.output()
        process.ready()
        yield process, found.group(1)
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def api(daemon: tuple[DaemonProcess, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon[1], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


@pytest.fixture
def page(browser: Any, daemon: tuple[DaemonProcess, str]) -> Iterator[Any]:
    """A logged-in tab (its own cookies), sized like a laptop screen."""
    context = browser.new_context(base_url=daemon[1], viewport={"width": 1280, "height": 900},
                                  timezone_id="America/New_York")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.goto("/")
    assert tab.url.endswith("/login?next=%2F")
    tab.get_by_label("API token").fill(TOKEN)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(re.compile(r"/$"))
    yield tab
    context.close()


def shot(tab: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def mark_no_reload(tab: Any) -> None:
    """Set a flag that only survives if the page is never reloaded."""
    tab.evaluate("window.__noReload = true")


def assert_not_reloaded(tab: Any) -> None:
    assert tab.evaluate("window.__noReload === true"), "the page was reloaded"


def cancel_all(api: httpx.Client, deployment: str) -> None:
    for run in api.get("/api/v1/runs", params={"deployment": deployment}).json()["runs"]:
        if run["state"] in ("Scheduled", "Pending", "Running"):
            api.post(f"/api/v1/runs/{run['id']}/cancel")


def test_open_the_overview(page: Any) -> None:
    expect = _expect()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Runs by state, last 24 hours")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Deployments")).to_be_visible()
    expect(page.locator("main")).to_contain_text("None: the watched specs are valid.")
    page.get_by_role("link", name="Deployments").first.click()
    expect(page.get_by_role("link", name="nightly-report")).to_be_visible()
    expect(page.locator("body")).to_contain_text("every day at 02:30 (Europe/Berlin)")
    expect(page.locator(".local-time").first).to_contain_text("your time")  # the viewer's zone, added by JS
    shot(page, "deployments")


def test_trigger_a_run_with_parameters_see_a_validation_message_and_watch_it_complete_live(page: Any) -> None:
    expect = _expect()
    page.goto("/deployments/greet")
    page.get_by_text("Run…").click()
    page.get_by_label(re.compile("^who")).fill("browser")
    page.get_by_label(re.compile("^seconds")).fill("45")  # exclusiveMaximum 30: only the server knows
    page.get_by_label(re.compile("^tone")).select_option("loud")
    mark_no_reload(page)
    page.get_by_text("Job variable overrides (optional)").click()
    job_variables = page.get_by_label(re.compile("^Job variables"))
    job_variables.fill("{oops")
    page.get_by_role("button", name="Start run").click()  # checked in the browser: nothing is sent
    assert "Not valid JSON" in job_variables.evaluate("el => el.validationMessage")
    job_variables.fill('{"env": {"GREETING": "hi"}}')
    page.get_by_role("button", name="Start run").click()
    error = page.locator("#param-seconds-error")
    expect(error).to_contain_text("45")
    expect(error).to_contain_text("30")
    expect(page.get_by_label(re.compile("^seconds"))).to_have_attribute("aria-invalid", "true")
    assert_not_reloaded(page)  # the form was replaced in place
    shot(page, "run-form-validation")
    page.get_by_label(re.compile("^seconds")).fill("2")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{32}$"))
    mark_no_reload(page)
    state = page.locator("h1 .state")
    expect(state).to_have_text("Completed", timeout=30_000)
    assert_not_reloaded(page)  # the state changed through server-sent events
    log = page.locator("#log")
    expect(log).to_contain_text("hello browser")
    expect(log).to_contain_text("done")
    expect(page.locator("[data-timeline]")).to_contain_text("Running")
    expect(page.locator("main")).to_contain_text('"tone": "loud"')
    shot(page, "run-completed")


def test_read_the_logs_of_a_run_as_they_are_written(page: Any, api: httpx.Client) -> None:
    expect = _expect()
    run = api.post("/api/v1/deployments/greet/runs", json={"parameters": {"who": "follower", "seconds": 3}}).json()
    page.goto(f"/runs/{run['id']}")
    mark_no_reload(page)
    expect(page.locator("#log")).to_contain_text("hello follower", timeout=20_000)
    expect(page.locator("#log")).to_contain_text("done", timeout=20_000)
    expect(page.locator("[data-log-status]")).to_contain_text("The run has ended")
    assert_not_reloaded(page)


def test_cancel_a_long_run(page: Any, api: httpx.Client) -> None:
    expect = _expect()
    run = api.post("/api/v1/deployments/sleeper/runs", json={}).json()
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("h1 .state")).to_have_text("Running", timeout=20_000)
    expect(page.locator("#log")).to_contain_text("sleeping")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("h1 .state")).to_have_text("Cancelled", timeout=20_000)
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.locator("[data-timeline]")).to_contain_text("cancel requested")
    shot(page, "run-cancelled")


def test_pause_and_resume_a_deployment(page: Any, api: httpx.Client) -> None:
    expect = _expect()
    page.goto("/deployments/nightly-report")
    page.get_by_role("button", name="Pause Deployment nightly-report").click()
    expect(page.locator("h1")).to_contain_text("paused")
    assert api.get("/api/v1/deployments/nightly-report").json()["paused"] is True
    page.get_by_role("button", name="Resume Deployment nightly-report").click()
    expect(page.locator("h1")).not_to_contain_text("paused")
    assert api.get("/api/v1/deployments/nightly-report").json()["paused"] is False
    shot(page, "deployment")


def test_see_why_a_queued_run_waits(page: Any, api: httpx.Client) -> None:
    expect = _expect()
    first = api.post("/api/v1/deployments/one-at-a-time/runs", json={}).json()
    try:
        wait_for(lambda: api.get(f"/api/v1/runs/{first['id']}").json()["state"] == "Running", timeout=20,
                 message="the first run to start")
        page.goto("/pools")
        mark_no_reload(page)
        second = api.post("/api/v1/deployments/one-at-a-time/runs", json={}).json()
        row = page.locator(f'tr[data-run-id="{second["id"]}"]')
        expect(row).to_contain_text("queue limit 1 reached")  # appeared live: the page follows run events
        assert_not_reloaded(page)
        shot(page, "pools")
        page.goto(f"/runs/{second['id']}")
        expect(page.locator("[data-waiting]")).to_contain_text("queue limit 1 reached")
    finally:
        cancel_all(api, "one-at-a-time")


def test_runs_list_updates_live(page: Any, api: httpx.Client) -> None:
    expect = _expect()
    run = api.post("/api/v1/deployments/greet/runs", json={"parameters": {"who": "list", "seconds": 1}}).json()
    page.goto("/runs")
    page.wait_for_selector("body[data-live-ready]", state="attached")  # the event stream is open
    mark_no_reload(page)
    expect(page.locator(f'[data-run-state="{run["id"]}"]')).to_have_text("Completed", timeout=30_000)
    api.post("/api/v1/deployments/greet/runs", json={"parameters": {"who": "new", "seconds": 0}})
    expect(page.locator("[data-new-runs]")).to_be_visible(timeout=20_000)
    assert_not_reloaded(page)
    page.goto("/")
    shot(page, "overview")
    assert json.loads(json.dumps(page.evaluate("document.title"))) == "Overview · orchestra"


UNLABELLED = """() => Array.from(document.querySelectorAll("input, select, textarea, button"))
    .filter(el => el.type !== "hidden" && !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !(el.tagName === "BUTTON" && el.textContent.trim()))
    .map(el => el.outerHTML)"""


def test_every_page_works_from_the_keyboard_and_labels_every_control(page: Any) -> None:
    expect = _expect()
    for path in ("/", "/deployments", "/deployments/greet", "/runs", "/pools", "/plan"):
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
        assert page.locator("main h1").count() == 1, path
    page.goto("/deployments/greet")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    expect(page.locator(":focus")).to_have_attribute("id", "main")
    page.get_by_text("Run…").focus()
    page.keyboard.press("Enter")  # the Run button is a native disclosure: Enter opens the form
    expect(page.get_by_label(re.compile("^who"))).to_be_visible()


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect
