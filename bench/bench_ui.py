"""Benchmark the web UI's pages with 10,000 deployments and 100,000 runs (figures printed, never asserted).

Seeds a SQLite store (bulk inserts), serves the API with the UI mounted by
uvicorn on 127.0.0.1 in a separate process (so the client does not share the
server's interpreter), logs in through the form, and prints for each page the
time to first byte and the full load (the HTML and then its CSS and
JavaScript), median and p95 over N requests; ``GET /api/v1/health`` in the
same run is the baseline (the cost of a request that does no work). With
``/usr/bin/chromium`` and Playwright present it also prints Chromium's own
navigation timing (responseStart and loadEventEnd) for the same pages.

    .venv/bin/python bench/bench_ui.py [--deployments 10000] [--runs 100000] [--requests 50] [--browser 15]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from orchestra.store import CANCELLED, COMPLETED, FAILED, MISSED, SCHEDULED, SKIPPED, NewRun, ResourceWrite, open_store

TOKEN = "bench-token"
NOW = datetime.now(UTC).replace(microsecond=0)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
# One in a hundred of each: 80 Completed, 5 Failed, 5 Cancelled, 5 Skipped, 4 Missed, 1 Scheduled.
MIX = (COMPLETED,) * 80 + (FAILED,) * 5 + (CANCELLED,) * 5 + (SKIPPED,) * 5 + (MISSED,) * 4 + (SCHEDULED,)
PAGES = ("/deployments", "/deployments?page=150", "/deployments?label=team%3Dt7&name=7",
         "/runs", "/runs?state=Failed&pool=pool-1", "/", "/pools")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SERVE = """
import sys, time
from pathlib import Path
from orchestra.api.app import create_app
from orchestra.api.server import ApiServer
from orchestra.api.settings import ApiSettings
from orchestra.store import open_store
from orchestra.ui import mount
root = Path(sys.argv[1])
store = open_store(f"sqlite:///{root / 'orchestra.db'}")
settings = ApiSettings(token=sys.argv[2], state_dir=root / ".orchestra")
server = ApiServer(mount(create_app(store, settings=settings), store, settings), "127.0.0.1", 0)
server.start()
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


class Clock:
    """The store's clock while seeding: moved back and forth to spread created_at over a day."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def seed(root: Path, deployments: int, runs: int, days: float) -> float:
    """Deployments with cron schedules in several zones; runs created over ``days`` days, most of
    them ended (Completed, Failed, ...), 1 % Scheduled (half of those due)."""
    started = time.perf_counter()
    clock = Clock()
    with open_store(f"sqlite:///{root / 'orchestra.db'}", clock=clock) as store:
        pools = [ResourceWrite("WorkPool", f"pool-{p}", {"name": f"pool-{p}"},
                               {"type": "process", "concurrencyLimit": 8}, None, None, f"p{p}", manager="api")
                 for p in range(4)]
        store.apply_resources(pools + [_deployment(i) for i in range(deployments)])
        chunk = 1000
        for start in range(0, runs, chunk):
            clock.now = NOW - timedelta(days=days * (1 - start / runs))
            store.insert_scheduled_runs([_run(i, deployments, clock.now) for i in range(start, min(start + chunk, runs))])
        with store.engine.begin() as conn:  # ended states cannot be inserted; set them as a worker would have
            conn.exec_driver_sql("UPDATE runs SET state = substr(state_reason, 6) WHERE state_reason LIKE 'seed:%'")
    return time.perf_counter() - started


def _deployment(i: int) -> ResourceWrite:
    spec = {"command": ["echo", "{{ parameters.who }}"], "pool": f"pool-{i % 4}", "parameters": {"who": "x"},
            "schedules": [{"cron": f"{i % 60} {i % 24} * * *", "timezone": ZONES[i % len(ZONES)]}]}
    return ResourceWrite("Deployment", f"dep-{i:05d}", {"name": f"dep-{i:05d}", "labels": {"team": f"t{i % 10}"}},
                         spec, "specs/bench.yaml", i + 1, f"d{i}")


def _run(i: int, deployments: int, created: datetime) -> NewRun:
    state = MIX[i % len(MIX)]
    when = created + (timedelta(hours=1 if i % 200 else -1) if state == SCHEDULED else timedelta())
    return NewRun(deployment=f"dep-{i % deployments:05d}", pool=f"pool-{i % deployments % 4}", scheduled_time=when,
                  trigger="bench", idempotency_key=f"bench/{i}", state=SCHEDULED if state == SCHEDULED else SKIPPED,
                  state_reason=f"seed:{state}" if state != SCHEDULED else "seeded")


def serve(root: Path) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(root), TOKEN], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def login(client: httpx.Client) -> None:
    form = client.get("/login")
    found = CSRF.search(form.text)
    assert found, "no login form"
    response = client.post("/login", data={"token": TOKEN, "csrf": found.group(1), "next": "/"})
    assert response.status_code == 303, response.text


def timed(client: httpx.Client, path: str) -> tuple[float, float]:
    """(time to first byte, time to the whole page with its static assets), in seconds."""
    start = time.perf_counter()
    with client.stream("GET", path) as response:
        first = time.perf_counter() - start
        html = response.read().decode()
        assert response.status_code == 200, (path, response.status_code)
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', html):
        client.get(asset).raise_for_status()
    return first, time.perf_counter() - start


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms"


def measure(client: httpx.Client, path: str, requests: int, fetch: Callable[[httpx.Client, str], tuple[float, float]]
            ) -> None:
    fetch(client, path)  # warm up (templates compiled, caches filled)
    results = [fetch(client, path) for _ in range(requests)]
    print(f"  {path:42s} TTFB {summary([r[0] for r in results])} | full load {summary([r[1] for r in results])}")


def health(client: httpx.Client, path: str) -> tuple[float, float]:
    start = time.perf_counter()
    with client.stream("GET", path) as response:
        first = time.perf_counter() - start
        response.read()
    return first, time.perf_counter() - start


def in_chromium(url: str, cookie: str, loads: int) -> None:
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("(Chromium timing skipped: playwright is not installed)")
        return
    if not chromium.exists() or loads <= 0:
        print("(Chromium timing skipped: no /usr/bin/chromium)" if loads > 0 else "")
        return
    print(f"In Chromium (navigation timing, {loads} loads each):")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        context = browser.new_context(base_url=url)
        context.add_cookies([{"name": "orchestra_session", "value": cookie, "url": url}])
        page = context.new_page()
        for path in PAGES[:5]:
            first, loaded = [], []
            for _ in range(loads + 1):
                page.goto(path, wait_until="load")
                timing = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
                first.append(timing["responseStart"] / 1000)
                loaded.append(timing["loadEventEnd"] / 1000)
            print(f"  {path:42s} TTFB {summary(first[1:])} | load event {summary(loaded[1:])}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=10.0, help="the runs were created over this many days")
    parser.add_argument("--requests", type=int, default=50, help="requests per page")
    parser.add_argument("--browser", type=int, default=15, help="Chromium loads per page (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds = seed(root, args.deployments, args.runs, args.days)
        print(f"Seeded {args.deployments:,} deployments and {args.runs:,} runs (created over {args.days:g} days) "
              f"in {seconds:.1f} s")
        server, url = serve(root)
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                login(client)
                print(f"Over HTTP ({args.requests} requests each, one client, after one warm-up):")
                measure(client, "/api/v1/health", args.requests, health)
                for path in PAGES:
                    measure(client, path, args.requests, timed)
                in_chromium(url, client.cookies["orchestra_session"], args.browser)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
