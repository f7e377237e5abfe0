"""Benchmark the daemon as a real process (issue figures, printed, never asserted).

(a) 200 runs due at the same boundary in one pool of concurrency 8: how long
    after the boundary the first starts, and how fast the batch drains beside
    a bare subprocess loop running the same command at the same concurrency,
    measured in the same run (the loop's median of three, taken right after the
    burst); and the CPU each spends per run, the figure that
    a machine loaded by others disturbs least (its scheduler gives the daemon's
    one busy thread a smaller share than the loop's eight);
(b) an idle daemon with 1,000 deployments: CPU share and resident memory;
(c) a spec edit: time from the file's rename into place until the store has it.

    .venv/bin/python bench/bench_daemon.py [--runs 200] [--idle-deployments 1000] [--idle-seconds 20]
        [--only burst|idle]     (a) alone, or (b) and (c) alone
        [--repeat 3]            (a) several times, with the median ratio
        [--command "sleep 0.02"]  (a) with another job than ``true`` (split on spaces): the
                                  daemon's cost per run against a job that lasts a while
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

from orchestra.runners.spawn import HOLD_SHELL, holding_is_faithful
from orchestra.store import open_store

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process, concurrencyLimit: 8}\n"
COMMAND = ["true"]


def deployment(name: str, schedule: str, extra: str = "") -> str:
    """A deployment of ``COMMAND`` (``main`` sets it from ``--command``)."""
    return (f"---\napiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            f"  command: {COMMAND!r}\n  pool: local\n  schedules: [{schedule}]\n{extra}")


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = f"sqlite:///{root / 'orchestra.db'}"
        env = {**os.environ, "ORCHESTRA_DB": self.db}
        self.log = (root / "daemon.log").open("wb")
        self.proc = subprocess.Popen([ORCHESTRA, "daemon", "specs", "--no-api", "--log-level", os.environ.get("BENCH_LOG_LEVEL", "WARNING")], cwd=root, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_applied(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with open_store(self.db) as store:
            while time.monotonic() < deadline:
                status = store.get_status("spec_status")
                if status and status.get("ok") and status.get("resources") == count:
                    return
                if status and not status.get("ok"):  # a bench spec the daemon refuses: say why at once
                    raise SystemExit(f"the daemon refused the specs: {status.get('errors')}")
                if self.proc.poll() is not None:
                    raise SystemExit(f"the daemon ended: {(self.root / 'daemon.log').read_text()[-2000:]}")
                time.sleep(0.1)
        raise SystemExit("the daemon did not apply the specs in time")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


BARE_SAMPLES = 3


def bare_loop(count: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: subprocess.run(COMMAND, check=True), range(count)))
    return time.perf_counter() - start


def burst(count: int) -> float:
    """One burst, its figures printed; returns the drain ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "specs").mkdir()
        boundary = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
        anchor = boundary.isoformat().replace("+00:00", "Z")
        docs = [deployment(f"job-{i}", f"{{interval: 1h, anchor: '{anchor}'}}") for i in range(count)]
        (root / "specs" / "pool.yaml").write_text(POOL)
        (root / "specs" / "jobs.yaml").write_text("".join(docs))
        with Daemon(root) as daemon:  # stopped however the block ends
            daemon.wait_applied(count + 1)
            with open_store(daemon.db) as store:
                # The figures come from the stored times, not from when we look: so look
                # rarely, and not before the batch can be done, to leave the cores to the daemon.
                time.sleep(max(0.0, (boundary - datetime.now(UTC)).total_seconds() - 0.2))
                cpu_before = _cpu_seconds(daemon.proc.pid)
                time.sleep(0.2 + count / 1000)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    done = store.list_runs(state="Completed", limit=count + 10)
                    if len(done) >= count:
                        break
                    time.sleep(0.5)
                daemon_cpu = _cpu_seconds(daemon.proc.pid) - cpu_before
                runs = store.list_runs(limit=count + 10)
                starts = sorted(e.time for r in runs for e in store.events(r.id) if e.to_state == "Running")
                ends = sorted(r.end_time for r in runs if r.end_time)
    first = (starts[0] - boundary).total_seconds() * 1000
    drain = (ends[-1] - boundary).total_seconds()
    # The bare loop lasts a tenth of a second, so one sample moves with the moment
    # (0.07-0.13 s here): the median of three is the baseline.
    bare_cpu_before = time.process_time()
    bare_runs = [bare_loop(count, 8) for _ in range(BARE_SAMPLES)]
    bare_cpu = (time.process_time() - bare_cpu_before) / BARE_SAMPLES
    baseline = statistics.median(bare_runs)
    print(f"(a) {count} runs of {' '.join(COMMAND)!r} due at one boundary, pool concurrency 8:")
    print(f"    first run started {first:.0f} ms after the boundary (target < 50 ms)")
    print(f"    batch drained in {drain:.2f} s = {count / drain:.1f} runs/s; bare subprocess loop "
          f"{baseline:.2f} s = {count / baseline:.1f} runs/s (median of {', '.join(f'{t:.2f}' for t in bare_runs)} s); "
          f"ratio {baseline / drain:.2f} (target >= 0.5)")
    print(f"    CPU per run, the jobs' own excluded: daemon {1000 * daemon_cpu / count:.2f} ms, "
          f"bare loop {1000 * bare_cpu / count:.2f} ms")
    return baseline / drain


def bursts(count: int, repeat: int) -> None:
    """``repeat`` bursts one after the other: on a shared machine one burst's ratio moves
    with the moment, so several, with their median, say more than one."""
    held = "yes" if holding_is_faithful() else f"no ({HOLD_SHELL} changes what it passes on, or no posix_spawn)"
    print(f"(a) jobs made ahead and held before the boundary on this machine: {held}")
    ratios = [burst(count) for _ in range(repeat)]
    if repeat > 1:
        print(f"(a) over {repeat} bursts: ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f} (target >= 0.5)")


def idle(count: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "specs").mkdir()
        (root / "specs" / "pool.yaml").write_text(POOL)
        for chunk in range(0, count, 50):
            docs = [deployment(f"d-{i}", f"{{cron: '{i % 60} {i % 24} * * *', timezone: Europe/Berlin}}")
                    for i in range(chunk, min(chunk + 50, count))]
            (root / "specs" / f"d{chunk:05d}.yaml").write_text("".join(docs))
        with Daemon(root) as daemon:  # stopped however the block ends
            daemon.wait_applied(count + 1)
            time.sleep(2)
            cpu0, wall0 = _cpu_seconds(daemon.proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu = _cpu_seconds(daemon.proc.pid) - cpu0
            wall = time.monotonic() - wall0
            rss = _rss_mb(daemon.proc.pid)
            edits = _edit_latencies(root, daemon)
    print(f"(b) idle daemon with {count} deployments over {wall:.0f} s: CPU {100 * cpu / wall:.2f} % "
          f"(target < 1 %), RSS {rss:.0f} MB (target < 150 MB)")
    print(f"(c) spec edit applied after: median {statistics.median(edits) * 1000:.0f} ms, "
          f"max {max(edits) * 1000:.0f} ms over {len(edits)} edits (target < 1 s)")


def _edit_latencies(root: Path, daemon: Daemon) -> list[float]:
    latencies = []
    target = root / "specs" / "d00000.yaml"
    with open_store(daemon.db) as store:
        for value in range(5):
            text = re.sub(r"command: \[[^]]*\]", f"command: ['true', '{value}']", target.read_text(), count=1)
            tmp = target.with_name(".d00000.yaml.tmp")
            tmp.write_text(text)
            saved = time.monotonic()
            tmp.rename(target)
            while store.get_resource("Deployment", "d-0").spec["command"] != ["true", str(value)]:
                if time.monotonic() - saved > 30:
                    raise SystemExit("edit not applied within 30 s")
                time.sleep(0.005)
            latencies.append(time.monotonic() - saved)
            time.sleep(0.5)
    return latencies


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--idle-deployments", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--only", choices=("burst", "idle"), help="run (a) alone, or (b) and (c) alone")
    parser.add_argument("--command", default="true", help="(a): the job's argv, split on spaces")
    parser.add_argument("--repeat", type=int, default=1, help="(a): how many bursts, each beside its own bare loop")
    args = parser.parse_args()
    COMMAND[:] = args.command.split()
    if args.only != "idle":
        bursts(args.runs, args.repeat)
    if args.only != "burst":
        idle(args.idle_deployments, args.idle_seconds)


if __name__ == "__main__":
    main()
