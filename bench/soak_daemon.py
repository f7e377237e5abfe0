"""A soak: real daemons on one store under random kills, stops, edits, runs and cancels (not a target).

The tests each pin one behaviour down; this shakes them together for minutes,
the way a busy team and a flaky machine would, then checks what must hold
whatever happened:

- the store is sound (SQLite's ``PRAGMA integrity_check``);
- after the last daemon's clean stop no run is left Pending, Running or Cancelling;
- every run's events chain (each starts where the last ended, none after an end)
  and end in the run's state;
- the 1 s ``missedRuns: all`` schedule has every slot exactly once;
- the deployment limited to one run at a time never had two running;
- no job outlived the soak (its processes carry a marker);
- no daemon logged an ERROR;
- no daemon or worker ended without a signal from the soak (a crash: SIGBUS, an
  exit on an error), and each one sent SIGTERM exited 0 (or, still starting, died of it).

Meanwhile, every 0.3-3 s, one of: ``kill -9`` a daemon, SIGTERM one, start a
second one, start a run, cancel a running one, edit the specs (a schedule's
timing, a deployment added or removed), pause or resume a deployment.

With ``--remote``, the first daemon also serves its API on loopback and a
remote worker (``orchestra worker``, lease 5 s) runs a second pool through it,
with its own 1 s ``missedRuns: all`` schedule, checked as the first; the worker
is killed, stopped and started again too, and a daemon without the API may be
all that runs for a while (the worker's leases then run out).

With ``--docker IMAGE`` (a local image with ``true`` and ``sleep``: no pull is
tried), a Docker pool runs a 2 s ``missedRuns: all`` schedule and a job that
times out, in containers that a killed daemon leaves running; checked too: each
2 s slot exactly once, no run had more containers made than attempts (a
restarted daemon adopts a container, it does not start the attempt again), and
no container of the soak still runs.

    .venv/bin/python bench/soak_daemon.py [--minutes 5] [--seed 1] [--remote] [--docker IMAGE]
        [--db postgresql+psycopg://user@127.0.0.1/db]   (default: SQLite in a temporary directory)

It prints what it did and each check; the exit code is 1 if a check failed.
A PostgreSQL database should be empty (or a soak's own from before).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
TERMINAL = {"Completed", "Failed", "Crashed", "Cancelled", "Skipped", "Missed"}
ACTIVE = {"Pending", "Running", "Cancelling"}
ACTIONS = ["kill9", "kill9", "term", "second", "run", "cancel", "edit", "pause", "nothing"]
REMOTE_ACTIONS = ["kill9_worker", "term_worker", "api_back"]
POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process, concurrencyLimit: 4}\n"
AWAY = "---\napiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: away}\nspec: {type: process, concurrencyLimit: 3}\n"
TICKS = {"tick": 1, "away-tick": 1, "box-tick": 2}  # the missedRuns: all schedules, their seconds
BOXES = """---
apiVersion: orchestra/v1
kind: WorkPool
metadata: {{name: boxes}}
spec:
  type: docker
  concurrencyLimit: 3
  baseJobTemplate:
    variables: {{type: object}}
    jobConfiguration:
      image: {image}
      command: "{{{{ command }}}}"
      pullPolicy: never
      terminationGracePeriod: 1s
"""


def deployment(name: str, body: str, pool: str = "local") -> str:
    indented = "".join(f"  {line}\n" for line in body.strip().splitlines())
    return f"---\napiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  pool: {pool}\n{indented}"


class Soak:
    def __init__(self, root: Path, db: str, marker: str, seed: int, remote: bool, image: str | None) -> None:
        self.root, self.db, self.marker, self.remote, self.image = root, db, marker, remote, image
        self.rng = random.Random(seed)
        self.port = _free_port()
        self.api: subprocess.Popen[bytes] | None = None  # the daemon serving the API (--remote)
        self.worker: subprocess.Popen[bytes] | None = None
        self.specs = root / "specs"
        self.specs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, ORCHESTRA_DB=db)
        self.log = open(root / "daemons.log", "ab")  # noqa: SIM115 - open for the soak's life
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.done: Counter[str] = Counter()
        self.told: set[int] = set()  # pids of the daemons and workers sent a signal
        self.unbidden: list[tuple[str, int, int]] = []  # (program, pid, exit code) of those that ended on their own

    def write_specs(self, limited_every: str = "1s", extra: bool = False) -> None:
        """Renamed into place, as an editor or ``git checkout`` does."""
        docs = POOL + "".join([
            deployment("tick", "command: ['true']\nschedules: [{interval: 1s}]\nmissedRuns: {policy: all}"),
            deployment("flaky", "command: ['sh', '-c', 'exit $(( $$ % 2 ))']\nschedules: [{interval: 2s}]\n"
                                "retries: {count: 2, delay: 1s}"),
            deployment("slow", "command: ['sleep', '3']\nschedules: [{interval: 3s}]\ntimeout: 1s\n"
                               "concurrency: {limit: 1, onLimit: cancel-running}"),
            deployment("limited", f"command: ['sleep', '1.5']\nschedules: [{{interval: {limited_every}}}]\n"
                                  "concurrency: {limit: 1, onLimit: skip}"),
            deployment("forker", f"command: ['sh', '-c', 'sleep {self.marker} & sleep {self.marker} & wait']"),
            deployment("extra", "command: ['true']\nschedules: [{interval: 1s}]") if extra else "",
        ])
        if self.remote:
            docs += AWAY + "".join([
                deployment("away-tick", "command: ['true']\nschedules: [{interval: 1s}]\nmissedRuns: {policy: all}",
                           pool="away"),
                deployment("away-slow", f"command: ['sleep', '{self.marker}']\nschedules: [{{interval: 2s}}]\n"
                                        "timeout: 2s\nretries: {count: 1, delay: 1s}", pool="away"),
            ])
        if self.image:
            docs += BOXES.format(image=self.image) + "".join([
                deployment("box-tick", "command: ['true']\nschedules: [{interval: 2s}]\nmissedRuns: {policy: all}",
                           pool="boxes"),
                deployment("box-slow", f"command: ['sleep', '{self.marker}']\nschedules: [{{interval: 3s}}]\n"
                                       "timeout: 2s\nretries: {count: 1, delay: 1s}", pool="boxes"),
            ])
        temporary = self.specs / ".all.yaml.tmp"
        temporary.write_text(docs)
        temporary.rename(self.specs / "all.yaml")

    def start(self) -> None:
        """A daemon: the one serving the API if it is not running (``--remote``), else one without."""
        serves = self.remote and (self.api is None or self.api.poll() is not None)
        where = ["--port", str(self.port)] if serves else ["--no-api"]
        if self.remote:  # the pool "away" is the remote worker's alone
            where += ["--workers", "local,boxes" if self.image else "local"]
        daemon = subprocess.Popen([ORCHESTRA, "daemon", str(self.specs), *where, "--shutdown-grace", "2s"],
                                  env=self.env, stdout=self.log, stderr=self.log, cwd=self.root)
        self.daemons.append(daemon)
        if serves:
            self.api = daemon

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [ORCHESTRA, "worker", "--pool", "away", "--api-url", f"http://127.0.0.1:{self.port}", "--lease", "5s",
             "--poll", "0.5s", "--shutdown-grace", "2s", "--log-dir", str(self.root / "worker-logs")],
            env=self.env, stdout=self.log, stderr=self.log, cwd=self.root)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ORCHESTRA, *args], env=self.env, capture_output=True, text=True, timeout=60,
                              cwd=self.root, check=False)

    def shake(self, minutes: float) -> None:
        self.write_specs()
        self.start()
        if self.remote:
            self.start_worker()
        actions = ACTIONS + (REMOTE_ACTIONS if self.remote else [])
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(0.3, 3.0))
            self._note_unbidden_ends([*self.daemons, *([self.worker] if self.worker else [])])
            self.daemons = [d for d in self.daemons if d.poll() is None]
            if not self.daemons:
                self.start()
                self.done["restart"] += 1
                continue
            if self.remote and self.worker is not None and self.worker.poll() is not None:
                self.start_worker()
                self.done["worker restart"] += 1
                continue
            action = self.rng.choice(actions)
            self.done[action] += 1
            getattr(self, f"_{action}")()

    def _note_unbidden_ends(self, processes: list[subprocess.Popen[bytes]]) -> None:
        """A daemon or worker that ended with no signal from the soak died of something
        (a crash, SIGBUS, an exit on an error): nothing else ends one."""
        for process in processes:
            ended = process.poll()
            if ended is not None and process.pid not in self.told:
                self.unbidden.append((str(process.args[1]), process.pid, ended))
                self.told.add(process.pid)  # said once

    def _kill9(self) -> None:
        daemon = self.rng.choice(self.daemons)
        self.told.add(daemon.pid)
        daemon.kill()
        daemon.wait()

    def _term(self) -> None:
        self._stop(self.rng.choice(self.daemons))

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        self._note_unbidden_ends([process])
        if process.poll() is not None:  # already ended
            return
        self.told.add(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            # a clean stop exits 0; one still starting, before its handler is in place, dies of the signal
            if process.wait(timeout=30) not in (0, -signal.SIGTERM):
                self.unbidden.append((f"{process.args[1]} on SIGTERM", process.pid, process.returncode))
        except subprocess.TimeoutExpired:
            print(f"{process.args[1]} did not stop within 30 s of SIGTERM (grace 2 s)")
            self.done["stuck on SIGTERM"] += 1
            process.kill()
            process.wait()

    def _kill9_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.told.add(self.worker.pid)
            self.worker.kill()
            self.worker.wait()

    def _term_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self._stop(self.worker)

    def _api_back(self) -> None:
        if self.api is None or self.api.poll() is not None:
            self.start()

    def _second(self) -> None:
        if len(self.daemons) < 2:
            self.start()

    def _run(self) -> None:
        self.cli("run", self.rng.choice(["forker", "tick", "flaky"]))

    def _cancel(self) -> None:
        listed = self.cli("get", "runs", "--state", "Running", "-o", "json", "--limit", "100")
        running = json.loads(listed.stdout) if listed.returncode == 0 else []
        if running:
            self.cli("cancel", self.rng.choice(running)["id"])

    def _edit(self) -> None:
        self.write_specs(self.rng.choice(["1s", "2s"]), extra=self.rng.random() < 0.5)

    def _pause(self) -> None:
        self.cli(self.rng.choice(["pause", "resume"]), "deployment", "flaky")

    def _nothing(self) -> None:
        pass

    def settle(self) -> int:
        """Kill what runs, then one daemon (and worker) for 15 s and clean stops; the daemon's exit code."""
        self._note_unbidden_ends([*self.daemons, *([self.worker] if self.worker else [])])
        for process in [*self.daemons, *([self.worker] if self.worker else [])]:
            if process.poll() is None:
                self.told.add(process.pid)
                process.kill()
                process.wait()
        self.cli("resume", "deployment", "flaky")
        self.start()
        last = self.daemons[-1]
        if self.remote:
            self.start_worker()
        time.sleep(15)
        if self.worker is not None:
            self._stop(self.worker)
        last.send_signal(signal.SIGTERM)
        return last.wait(timeout=60)


def check(db: str, marker: str, log: Path) -> dict[str, Any]:
    """Each invariant: [] when it holds, else what breaks it."""
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return _check(conn, marker, log)
    finally:
        engine.dispose()


def _check(conn: sa.Connection, marker: str, log: Path) -> dict[str, Any]:
    runs = {row.id: row for row in conn.execute(sa.text(
        "SELECT id, deployment, state, slot_time FROM runs"))}
    events: dict[str, list[Any]] = {}
    for row in conn.execute(sa.text("SELECT run_id, from_state, to_state, time FROM run_events ORDER BY id")):
        events.setdefault(row.run_id, []).append(row)
    problems: dict[str, Any] = {}
    if conn.dialect.name == "sqlite":
        result = conn.execute(sa.text("PRAGMA integrity_check")).scalar()
        problems["the store is sound"] = [] if result == "ok" else [result]
    problems["no run left active"] = [(r.id, r.deployment, r.state) for r in runs.values() if r.state in ACTIVE]
    problems["every run's events chain"] = [(run_id, r.deployment) for run_id, r in runs.items()
                                            if not _chains(events.get(run_id, []), r.state)]
    for tick, seconds in TICKS.items():
        slots = sorted(_utc(r.slot_time) for r in runs.values() if r.deployment == tick and r.slot_time)
        if tick != "tick" and not slots:
            continue
        twice = [slot for slot, count in Counter(slots).items() if count > 1]
        gaps = [(a, b) for a, b in zip(slots, slots[1:]) if b - a > timedelta(seconds=seconds)]
        problems[f"each {seconds} s slot of {tick!r} exactly once"] = (
            [("twice", s) for s in twice] + [("gap", g) for g in gaps])
    problems["one 'limited' run at a time"] = _overlaps([events.get(run_id, []) for run_id, r in runs.items()
                                                         if r.deployment == "limited"])
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True, check=False)
    problems["no job outlived the soak"] = left.stdout.split()
    problems["no daemon logged an ERROR"] = [line for line in log.read_text(errors="replace").splitlines()
                                             if " ERROR " in line][:5]
    problems["(runs by state)"] = {name: dict(Counter(r.state for r in runs.values() if r.deployment == name))
                                   for name in sorted({r.deployment for r in runs.values()})}
    problems["(left Scheduled, by deployment)"] = dict(Counter(r.deployment for r in runs.values()
                                                              if r.state == "Scheduled"))
    return problems


class ContainerWatch:
    """The engine's create events of the soak's Docker pool, streamed as they happen (the
    engine keeps only its last 256 events for a later ``since`` query)."""

    def __init__(self) -> None:
        import docker  # only with --docker: the SDK is an extra

        self.client = docker.from_env()
        self.made: Counter[str] = Counter()
        self._stream = self.client.events(decode=True, filters={
            "type": "container", "event": "create", "label": "orchestra.pool=boxes"})
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed under it: the soak is over
            for event in self._stream:
                self.made[event["Actor"]["Attributes"].get("orchestra.run-id", "?")] += 1

    def check(self, db: str) -> dict[str, Any]:
        """Containers made per run against its attempts, and none left running."""
        time.sleep(1)  # the last events on their way
        self._stream.close()
        engine = sa.create_engine(db)
        try:
            with engine.connect() as conn:
                attempts = {row.id: row.attempt for row in conn.execute(sa.text(
                    "SELECT id, attempt FROM runs WHERE deployment LIKE 'box-%'"))}
                adoptions = [row.reason for row in conn.execute(sa.text(
                    "SELECT e.reason FROM run_events e JOIN runs r ON r.id = e.run_id "
                    "WHERE r.deployment LIKE 'box-%' AND e.reason LIKE 'adopted by %'"))]
        finally:
            engine.dispose()
        running = self.client.containers.list(filters={"label": "orchestra.pool=boxes"})
        return {
            "no run had more containers than attempts": [(run, n, attempts.get(run)) for run, n in self.made.items()
                                                          if n > attempts.get(run, 0)],
            "no container of the soak still runs": [c.name for c in running],
            "(containers made)": sum(self.made.values()),
            "(containers adopted: recorded, started unrecorded)": (
                sum("before it was recorded" not in r for r in adoptions),
                sum("before it was recorded" in r for r in adoptions)),
        }


def _chains(events: list[Any], state: str) -> bool:
    before = None
    for event in events:
        if event.from_state != before or before in TERMINAL:
            return False
        before = event.to_state
    return before == state


def _overlaps(histories: list[list[Any]]) -> list[tuple[str, str]]:
    spans = []
    for history in histories:
        started = next((_utc(e.time) for e in history if e.to_state == "Running"), None)
        ended = next((_utc(e.time) for e in history if e.to_state in TERMINAL | {"Cancelling"}), None)
        if started is not None:
            spans.append((started, ended or datetime.max))
    spans.sort()
    return [(str(a), str(b)) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def _utc(value: Any) -> datetime:
    """SQLite hands times back as text, PostgreSQL as aware datetimes: both as naive UTC."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=None) if when.utcoffset() is None else (when - when.utcoffset()).replace(tzinfo=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="a SQLAlchemy URL (default: SQLite in the soak's directory)")
    parser.add_argument("--remote", action="store_true", help="also a remote worker through the API")
    parser.add_argument("--docker", metavar="IMAGE", help="also a Docker pool running this local image")
    args = parser.parse_args()
    marker = f"30.{os.getpid()}"  # the forker's sleeps, told from any other process by their argument
    with tempfile.TemporaryDirectory(prefix="orchestra-soak-") as tmp:
        root = Path(tmp)
        db = args.db or f"sqlite:///{root / 'orchestra.db'}"
        soak = Soak(root, db, marker, args.seed, args.remote, args.docker)
        containers = ContainerWatch() if args.docker else None
        soak.shake(args.minutes)
        code = soak.settle()
        print(f"{args.minutes:g} min, seed {args.seed}, {db.split(':')[0]}{', remote' if args.remote else ''}: "
              + ", ".join(f"{name} {count}" for name, count in sorted(soak.done.items()))
              + f"; the last daemon's clean stop exited {code}")
        problems = check(db.replace("postgresql://", "postgresql+psycopg://", 1), marker, root / "daemons.log")
        if containers is not None:
            problems |= containers.check(db.replace("postgresql://", "postgresql+psycopg://", 1))
        kept = Path(f"soak-{args.seed}-daemons.log").resolve()  # the temporary directory goes
        shutil.copyfile(root / "daemons.log", kept)
    problems["every SIGTERM stopped its daemon within 30 s"] = ["stuck"] * soak.done["stuck on SIGTERM"]
    problems["no daemon or worker ended unbidden, or other than cleanly on SIGTERM"] = soak.unbidden
    for info in ("(runs by state)", "(left Scheduled, by deployment)", "(containers made)",
                 "(containers adopted: recorded, started unrecorded)"):
        if info in problems:
            problems[info] = problems.pop(info)
    failed = False
    for name, found in problems.items():
        if name.startswith("("):
            print(f"  {name[1:-1]}: {found}")
            continue
        failed = failed or bool(found)
        print(f"  {'ok' if not found else 'BROKEN'}  {name}" + (f": {found[:5]}" if found else ""))
    if failed or code != 0:
        print(f"  the daemons' and workers' output: {kept}")
    else:
        kept.unlink()
    sys.exit(1 if failed or code != 0 else 0)


if __name__ == "__main__":
    main()

