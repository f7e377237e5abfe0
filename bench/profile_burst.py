"""Where a burst's time goes: the daemon in this process, its phases timed (a tool, not a target).

``bench_daemon.py`` measures the daemon from outside, as a user sees it. This
runs the same burst (200 ``true`` runs due at one boundary, pool concurrency 8)
with the real ``Daemon`` and ``LocalWorker`` in this process, wraps the phases
of a pass with timers, and prints per phase the wall time, the CPU time of the
thread that ran it (``time.thread_time``: what the loop's thread itself burns,
the figure that bounds the drain) and the number of calls, measured from the
boundary until the last run is recorded. It also prints how many of the machine's
cores were busy meanwhile (``/proc/stat``: the jobs and the kernel included), and
the same for a bare subprocess loop of the same runs at the same concurrency.

    .venv/bin/python bench/profile_burst.py [--runs 200] [--repeat 3]

The timers cost a few microseconds per call; compare runs of this script with
each other, not with ``bench_daemon.py``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench_daemon import POOL, bare_loop  # the same pool and baseline as the benchmark (bench/ is on the path)
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.reconcile.scheduler import Scheduler
from orchestra.runners.available import available_runners
from orchestra.runners.process import ProcessRunner
from orchestra.store import Store, open_store
from orchestra.store.tables import runs as runs_table
from orchestra.workers.launching import Launcher
from orchestra.workers.local import LocalWorker

PHASES: list[tuple[type, str]] = [
    (Daemon, "run_once"), (Daemon, "_tick"), (Daemon, "_current_marker"), (Scheduler, "tick"),
    (LocalWorker, "step"), (LocalWorker, "_gather_starts"), (LocalWorker, "_pass_record"),
    (LocalWorker, "_settle"), (LocalWorker, "_claim_and_start"), (LocalWorker, "_handle_cancels"),
    (Store, "finish_and_claim"), (Store, "transition_seen"), (Store, "claim_runs"), (Store, "next_due_time"),
    (Launcher, "launch"), (Launcher, "_render"), (ProcessRunner, "start"), (ProcessRunner, "start_held"),
    (Launcher, "_start"),
]


class Timers:
    """Wall and thread CPU per wrapped method, counted only while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.wall: collections.Counter[str] = collections.Counter()
        self.cpu: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: type, name: str) -> Callable[[], None]:
        original = getattr(owner, name)
        key = f"{owner.__name__}.{name}"

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                if self.on:
                    self.wall[key] += time.perf_counter() - wall
                    self.cpu[key] += time.thread_time() - cpu
                    self.calls[key] += 1

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


class MachineLoad:
    """Busy and total CPU ticks of the whole machine (``/proc/stat``, usually 10 ms each) over a span:
    how well a span kept the cores busy, whoever (daemon, jobs, kernel) kept them."""

    def __init__(self) -> None:
        self.busy = self.total = 0
        self._mark: tuple[int, int] | None = None

    @staticmethod
    def _ticks() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(field) for field in stat.readline().split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # busy = all but idle and iowait

    def begin(self) -> None:
        self._mark = self._ticks()

    def end(self) -> None:
        assert self._mark is not None
        busy, total = self._ticks()
        self.busy += busy - self._mark[0]
        self.total += total - self._mark[1]

    def describe(self, runs: int) -> str:
        cores = os.cpu_count() or 1
        return (f"{cores * self.busy / max(1, self.total):.2f} of {cores} cores busy, "
                f"{1000 * self.busy / os.sysconf('SC_CLK_TCK') / runs:.2f} ms of CPU per run")


def deployment(name: str, anchor: str) -> str:
    return (f"---\napiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            f"  command: ['true']\n  pool: local\n  schedules: [{{interval: 1h, anchor: '{anchor}'}}]\n")


def burst(count: int, timers: Timers, load: MachineLoad) -> tuple[float, float]:
    """One burst; (seconds from the boundary to the last end, process CPU seconds meanwhile)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "specs").mkdir()
        boundary = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        anchor = boundary.isoformat().replace("+00:00", "Z")
        (root / "specs" / "pool.yaml").write_text(POOL)
        (root / "specs" / "jobs.yaml").write_text("".join(deployment(f"job-{i}", anchor) for i in range(count)))
        with open_store(f"sqlite:///{root / 'orchestra.db'}") as store:
            worker = LocalWorker(store, runners=available_runners(root), worker_id="profile", log_dir=root / "logs")
            daemon = Daemon(store, worker, DaemonSettings(paths=[root / "specs"], shutdown_grace=5))
            worker.on_change = daemon.wake
            cpu: list[float] = []
            threading.Thread(target=_watch, args=(store, daemon, timers, load, boundary, count, cpu), daemon=True).start()
            daemon.serve()
            ends = [run.end_time for run in store.list_runs(limit=count + 10) if run.end_time]
    return (max(ends) - boundary).total_seconds(), cpu[0] if cpu else float("nan")


def _watch(store: Store, daemon: Daemon, timers: Timers, load: MachineLoad, boundary: datetime, count: int,
           cpu: list[float]) -> None:
    """Turn the timers on at the boundary; stop the daemon once every run is done (bounded)."""
    completed = select(func.count()).select_from(runs_table).where(runs_table.c.state == "Completed")
    time.sleep(max(0.0, (boundary - datetime.now(UTC)).total_seconds()))
    timers.on, started = True, time.process_time()
    load.begin()
    deadline = time.monotonic() + 60
    with open_store(store.engine.url.render_as_string(hide_password=False)) as reader:
        while time.monotonic() < deadline:
            with reader.engine.connect() as conn:  # a count, not the runs: the watch shares the interpreter
                if conn.scalar(completed) >= count:
                    break
            time.sleep(0.02)
    load.end()
    timers.on = False
    cpu.append(time.process_time() - started)
    daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    timers = Timers()
    restore = [timers.wrap(owner, name) for owner, name in PHASES]
    drains, cpus = [], []
    daemon_load, bare_load = MachineLoad(), MachineLoad()
    try:
        for _ in range(args.repeat):
            drain, cpu = burst(args.runs, timers, daemon_load)
            drains.append(drain)
            cpus.append(cpu)
            bare_load.begin()
            bare_loop(args.runs, 8)
            bare_load.end()
    finally:
        for undo in restore:
            undo()
    total = args.runs * args.repeat
    print(f"{args.runs} runs x {args.repeat}: drain median {1000 * statistics.median(drains):.0f} ms; "
          f"process CPU per run median {1000 * statistics.median(cpus) / args.runs:.2f} ms "
          "(the watcher's polling included)")
    print(f"machine, from the boundary to the last end: {daemon_load.describe(total)}; "
          f"bare subprocess loop: {bare_load.describe(total)} (the jobs and the kernel included)")
    print(f"{'phase':38} {'wall ms/run':>12} {'cpu ms/run':>11} {'calls':>7}")
    for key, wall in sorted(timers.wall.items(), key=lambda item: -item[1]):
        print(f"{key:38} {1000 * wall / total:12.3f} {1000 * timers.cpu[key] / total:11.3f} {timers.calls[key]:7d}")


if __name__ == "__main__":
    main()
