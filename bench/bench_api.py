"""Benchmark the HTTP API and remote workers with real processes (figures printed, never asserted).

(a) runs created per second through the API (``POST /deployments/{name}/runs``),
    one client after the other, and with 4 clients at once;
(b) end-to-end runs/s of N trivial jobs (``true``) through one remote worker
    (``daemon --workers none`` + ``orchestra worker``) and through the daemon's
    in-process worker, measured in the same run on the same pool, and their ratio;
(c) latency of ``GET /runs?limit=100`` (p50, p99) with 100,000 runs in the store
    (seeded directly into the store before the daemon starts).

    .venv/bin/python bench/bench_api.py [--create 500] [--runs 300] [--seed 100000] [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from orchestra.store import TERMINAL, NewRun, open_store

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
TOKEN = "bench-token"
CONCURRENCY = 8
SPECS = f"""\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {{name: local}}
spec: {{type: process, concurrencyLimit: {CONCURRENCY}}}
---
apiVersion: orchestra/v1
kind: Deployment
metadata: {{name: noop}}
spec: {{pool: local, command: ["true"]}}
"""
LISTENING = re.compile(r"API listening on (http://\S+)")
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "WARNING")


class Process:
    """A daemon or worker subprocess, its output in a file under the bench's temp dir."""

    def __init__(self, root: Path, name: str, args: list[str]) -> None:
        self.log_path = root / f"{name}.log"
        env = {**os.environ, "ORCHESTRA_DB": f"sqlite:///{root / 'orchestra.db'}", "ORCHESTRA_API_TOKEN": TOKEN}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([ORCHESTRA, *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)

    def url(self, timeout: float = 60) -> str:
        """The daemon's API URL, once it listens (it logs the line at INFO or above: forced below)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.log_path.name} ended: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise SystemExit("the daemon's API did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def daemon(root: Path, *extra: str) -> tuple[Process, httpx.Client, str]:
    (root / "specs").mkdir(exist_ok=True)
    (root / "specs" / "jobs.yaml").write_text(SPECS)
    process = Process(root, "daemon", ["daemon", "specs", "--port", "0", "--log-level", "INFO", *extra])
    url = process.url()
    api = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=60)
    deadline = time.monotonic() + 60
    while api.get("/deployments/noop").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit("the specs were not applied")
        time.sleep(0.05)
    return process, api, url


def creation(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        process, api, _ = daemon(Path(tmp), "--workers", "none")
        try:
            start = time.perf_counter()
            for _ in range(count):
                api.post("/deployments/noop/runs").raise_for_status()
            serial = count / (time.perf_counter() - start)
            clients = [httpx.Client(base_url=api.base_url, headers=api.headers, timeout=60) for _ in range(4)]
            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: clients[i % 4].post("/deployments/noop/runs").raise_for_status(),
                              range(count)))
            parallel = count / (time.perf_counter() - start)
            for client in clients:
                client.close()
        finally:
            api.close()
            process.stop()
    print(f"(a) runs created through the API: {serial:.0f} runs/s with one client, "
          f"{parallel:.0f} runs/s with 4 clients ({count} runs each)")


def end_to_end(count: int, remote: bool) -> float:
    """Runs/s from N runs falling due at once until the last is Completed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        process, api, url = daemon(root, *(["--workers", "none"] if remote else []))
        worker = None
        try:
            if remote:
                worker = Process(root, "worker", ["worker", "--pool", "local", "--api-url", url,
                                                  "--poll", "0.25s", "--log-level", LOG_LEVEL])
                time.sleep(1.0)  # let it start (import, first poll) before the clock runs
            with open_store(f"sqlite:///{root / 'orchestra.db'}") as store:
                due = datetime.now(UTC)
                store.insert_scheduled_runs([NewRun(deployment="noop", pool="local", scheduled_time=due,
                                                    trigger="bench", idempotency_key=f"bench/{i}")
                                             for i in range(count)])
                start = time.perf_counter()
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    ended = store.list_runs(state=TERMINAL, limit=count + 1)
                    if len(ended) >= count:
                        break
                    time.sleep(0.05)
                elapsed = time.perf_counter() - start
                failed = [run for run in ended if run.state != "Completed"]
                if len(ended) < count or failed:
                    raise SystemExit(f"{len(ended)} of {count} ended, {len(failed)} not Completed")
        finally:
            if worker is not None:
                worker.stop()
            api.close()
            process.stop()
    return count / elapsed


def listing(seed: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        later = datetime.now(UTC) + timedelta(days=365)
        with open_store(f"sqlite:///{root / 'orchestra.db'}") as store:
            started = time.perf_counter()
            for chunk in range(0, seed, 5000):
                store.insert_scheduled_runs([
                    NewRun(deployment="noop", pool="local", scheduled_time=later + timedelta(seconds=i),
                           trigger="bench", idempotency_key=f"seed/{i}")
                    for i in range(chunk, min(chunk + 5000, seed))])
            seeded = time.perf_counter() - started
        process, api, _ = daemon(root, "--workers", "none")
        try:
            api.get("/runs", params={"limit": 100}).raise_for_status()  # warm up
            latencies = []
            for _ in range(requests):
                start = time.perf_counter()
                page = api.get("/runs", params={"limit": 100})
                latencies.append(time.perf_counter() - start)
                assert len(page.json()["runs"]) == 100
        finally:
            api.close()
            process.stop()
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"(c) GET /runs?limit=100 with {seed:,} runs in the store (seeded in {seeded:.1f} s): "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {requests} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--create", type=int, default=500, help="runs created through the API in (a)")
    parser.add_argument("--runs", type=int, default=300, help="trivial runs in (b), per worker kind")
    parser.add_argument("--seed", type=int, default=100_000, help="runs in the store for (c)")
    parser.add_argument("--requests", type=int, default=300, help="GET /runs requests in (c)")
    args = parser.parse_args()
    creation(args.create)
    remote = end_to_end(args.runs, remote=True)
    local = end_to_end(args.runs, remote=False)
    print(f"(b) {args.runs} runs of `true`, pool concurrency {CONCURRENCY}: one remote worker {remote:.1f} runs/s, "
          f"in-process worker {local:.1f} runs/s; remote/in-process {remote / local:.2f}")
    listing(args.seed, args.requests)


if __name__ == "__main__":
    main()
