"""Remote workers end to end: a real daemon (``--workers none``) and real ``orchestra worker`` processes.

The daemon leaves all work to remote workers; a worker claims through the
API, runs the job on "its machine" (here: another process), streams the log
back and reports the states. Heartbeat loss is a SIGSTOP of the worker past
its (short) lease: the daemon recovers its runs (retried, or Crashed), and
once continued the worker finds its leases revoked and kills its jobs; a
late report of the revoked attempt is refused with 409 and changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_fixtures import ORCHESTRA, DaemonProcess, daemon_factory, deployment, wait_for, workdir  # noqa: F401
from tests.docker_fixtures import DOCKER_POOL
from tests.worker_fixtures import is_gone

TOKEN = "remote-worker-token"
LOW_FILES = 40  # descriptors for a whole worker: its own take about 15, each running job 3
LISTENING = re.compile(r"API listening on (http://\S+)")
TERMINAL = {"Completed", "Failed", "Crashed", "Cancelled"}
Factory = Callable[..., DaemonProcess]


class WorkerProcess:
    """An ``orchestra worker`` subprocess; ended by its pid in the fixture's finalizer."""

    def __init__(self, workdir: Path, name: str, url: str, token: str | None, extra: list[str],
                 open_files: tuple[int, int] | None = None) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("ORCHESTRA_API_TOKEN", "ORCHESTRA_DB")}
        if token is not None:
            env["ORCHESTRA_API_TOKEN"] = token
        home = workdir / name
        home.mkdir(exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [ORCHESTRA, "worker", "--pool", "local", "--api-url", url, "--name", name, "--poll", "0.2s",
                 "--base-dir", str(workdir), *extra],
                cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files)) if open_files else None)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon(workdir: Path, daemon_factory: Factory) -> DaemonProcess:  # noqa: F811
    (workdir / "specs" / "jobs.yaml").write_text("---\n".join([
        deployment("greet", 'command: ["sh", "-c", "echo hello from $ORCHESTRA_RUN_ID; echo oops >&2"]'),
        deployment("sleeper", 'command: ["sh", "-c", "echo $$ >> pids; exec sleep 60"]\nretries: {count: 1}'),
        deployment("fragile", 'command: ["sh", "-c", "echo $$ >> pids; exec sleep 60"]'),
    ]))
    process = daemon_factory("--workers", "none")
    process.env["ORCHESTRA_API_TOKEN"] = TOKEN
    return process.start()


@pytest.fixture
def workers(workdir: Path) -> Iterator[Callable[..., WorkerProcess]]:  # noqa: F811
    started: list[WorkerProcess] = []

    def start(url: str, name: str = "w1", token: str | None = TOKEN, *extra: str,
              open_files: tuple[int, int] | None = None) -> WorkerProcess:
        started.append(WorkerProcess(workdir, name, url, token, list(extra), open_files))
        return started[-1]

    yield start
    for process in started:
        process.cleanup()


def api_url(daemon: DaemonProcess) -> str:
    found = wait_for(lambda: LISTENING.search(daemon.output()) or (daemon.proc and daemon.proc.poll() is not None),
                     timeout=30, message="the API to listen")
    assert isinstance(found, re.Match), daemon.output()
    return found.group(1)


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def trigger(api: httpx.Client, name: str) -> str:
    wait_for(lambda: api.get(f"/deployments/{name}").status_code == 200, timeout=30, message="specs applied")
    response = api.post(f"/deployments/{name}/runs")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def run_where(api: httpx.Client, run_id: str, test: Callable[[dict[str, Any]], bool], message: str,
              timeout: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(lambda: (run := api.get(f"/runs/{run_id}").json()) and test(run) and run,
                                     timeout=timeout, message=message)
    return found


def pids(workdir: Path, count: int) -> list[int]:
    path = workdir / "pids"
    found = wait_for(lambda: path.exists() and len(path.read_text().split()) >= count and path.read_text().split(),
                     message=f"{count} job(s) to write their pid")
    return [int(pid) for pid in found]


def test_a_remote_worker_runs_the_job_and_its_log_and_states_reach_the_daemon(
        daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:
    url = api_url(daemon)
    worker = workers(url, "remote-a", TOKEN, "--health-port", "0", "--health-host", "127.0.0.1")
    with client(url) as api:
        run_id = trigger(api, "greet")
        final = run_where(api, run_id, lambda r: r["state"] in TERMINAL, "the run to end")
        assert final["state"] == "Completed", (final, worker.output())
        assert final["worker"] == "remote-a"
        assert [e["to"] for e in final["events"]] == ["Scheduled", "Pending", "Running", "Completed"]
        text = wait_for(lambda: "ended: exit code 0" in (t := api.get(f"/runs/{run_id}/logs").json()["text"]) and t,
                        message="the whole log on the daemon")
        assert f"hello from {run_id}\noops\n" in text
        assert text.startswith("[orchestra] attempt 1 of 1 started at")
        assert text.count("hello from") == 1  # shipped once, however often the shipper looked
    shown = json.loads(daemon.cli("status", "-o", "json").stdout)  # who serves the store
    assert [(d["workers"], d["state"]) for d in shown["daemons"]] == [("none", "running")]
    assert [(w["worker"], w["pools"], w["state"]) for w in shown["workers"]] == [("remote-a", ["local"], "online")]
    assert "Worker remote-a online: claims from pools: local; seen" in daemon.cli("status").stdout
    health = re.search(r"health check listening on (http://\S+)", worker.output())
    assert health, worker.output()
    answer = httpx.get(health.group(1), timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert 0 <= answer.json()["loopSecondsAgo"] < 60  # its loop has come round


def test_heartbeat_loss_crashes_or_retries_the_runs_and_the_revoked_worker_kills_its_jobs(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    url = api_url(daemon)
    worker = workers(url, "remote-b", TOKEN, "--lease", "2s")
    with client(url) as api:
        retried, crashed = trigger(api, "sleeper"), trigger(api, "fragile")
        for run_id in (retried, crashed):
            run_where(api, run_id, lambda r: r["state"] == "Running", "the jobs to start")
        first_pids = pids(workdir, 2)

        worker.signal(signal.SIGSTOP)  # no more heartbeats: after 2s the daemon recovers both runs
        again = run_where(api, retried, lambda r: r["attempt"] == 2, "the retry", timeout=20)
        assert again["state"] == "Scheduled" and "lease of worker remote-b expired" in again["stateReason"]
        lost = run_where(api, crashed, lambda r: r["state"] == "Crashed", "the crash", timeout=20)
        assert "lease of worker remote-b expired" in lost["stateReason"]
        assert not any(is_gone(pid) for pid in first_pids)  # the daemon killed nothing: not its machine

        worker.signal(signal.SIGCONT)  # it finds its leases revoked and kills both jobs
        wait_for(lambda: all(is_gone(pid) for pid in first_pids), timeout=20, message="the revoked jobs to die")
        assert "lease lost" in worker.output()
        running = run_where(api, retried, lambda r: r["state"] == "Running", "attempt 2 to run")
        assert running["attempt"] == 2 and running["worker"] == "remote-b"

        # A late report of the revoked attempts: refused, nothing changes.
        before = {run_id: api.get(f"/runs/{run_id}").json() for run_id in (retried, crashed)}
        late = api.post("/workers/remote-b/transitions", json={"reports": [
            {"runId": retried, "attempt": 1, "toState": "Completed", "reason": "late", "endTimeOffset": 0,
             "exitCode": 0},
            {"runId": crashed, "attempt": 1, "toState": "Completed", "reason": "late", "exitCode": 0}]})
        assert late.status_code == 409, late.text
        assert [item["status"] for item in late.json()["results"]] == [409, 409]
        for run_id, seen in before.items():
            assert api.get(f"/runs/{run_id}").json() == seen
        assert worker.proc.poll() is None, worker.output()


def a_running_job(workdir: Path, url: str, start: Callable[..., WorkerProcess], name: str,
                  *extra: str) -> tuple[WorkerProcess, str, int]:
    """A worker ``name`` (``extra``: its options) running a run of "fragile": the worker,
    the run's id and the job's pid."""
    worker = start(url, name, TOKEN, *extra)
    with client(url) as api:
        run_id = trigger(api, "fragile")
        run_where(api, run_id, lambda r: r["state"] == "Running", "the job to start")
    return worker, run_id, pids(workdir, 1)[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_worker_cleanly_and_cancels_what_is_still_running(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess],  # noqa: F811
        signum: signal.Signals) -> None:
    """SIGHUP too: a worker whose terminal goes away stops as cleanly as a supervisor's SIGTERM."""
    url = api_url(daemon)
    worker, run_id, job_pid = a_running_job(workdir, url, workers, "remote-c", "--shutdown-grace", "1s")
    worker.signal(signum)
    assert worker.proc.wait(timeout=30) == 0, worker.output()
    with client(url) as api:
        final = api.get(f"/runs/{run_id}").json()
    assert final["state"] == "Cancelled", final
    assert is_gone(job_pid)


def test_a_signal_while_the_daemon_is_down_still_stops_the_workers_jobs(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    """The daemon gone (a restart, a network cut) when the worker is told to stop: the
    worker cannot report, but its jobs must not outlive it; the daemon takes the runs back
    when their lease runs out, as after any lost worker. Found by the soak: the worker
    exited on the first failed report, its jobs left running."""
    url = api_url(daemon)
    worker, run_id, job_pid = a_running_job(workdir, url, workers, "remote-f", "--shutdown-grace", "1s",
                                            "--lease", "3s")
    daemon.kill9()
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0, worker.output()
    assert is_gone(job_pid), "the job outlived its worker"
    assert f"run {run_id[:12]} fragile: cannot report that its job ended" in worker.output()
    daemon.start()  # back: the run's lease has run out, so it is taken back, not left Running
    daemon.ready()
    found = LISTENING.search(daemon.output()[daemon.log_start:])
    assert found, daemon.output()
    with client(found.group(1)) as api:
        run_where(api, run_id, lambda r: r["state"] in TERMINAL, "the daemon to take the run back")


def test_a_worker_refused_its_token_by_a_restarted_daemon_stops_its_jobs_as_it_exits(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    """The daemon comes back with another token: the worker exits (a wrong token will not
    become right by retrying), and its shutdown, refused too, still stops its jobs."""
    url = api_url(daemon)
    worker, _, job_pid = a_running_job(workdir, url, workers, "remote-g", "--shutdown-grace", "1s")
    daemon.kill9()
    daemon.env["ORCHESTRA_API_TOKEN"] = "a-new-token"
    daemon.extra += ["--port", url.rsplit(":", 1)[1]]  # back where the worker looks for it
    daemon.start()
    daemon.ready()
    assert worker.proc.wait(timeout=60) == 1, worker.output()
    assert "refused the token" in worker.output()
    assert is_gone(job_pid), "the job outlived its worker"


def test_keep_logs_deletes_old_local_copies_and_keeps_what_the_worker_runs(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    url = api_url(daemon)
    log_dir = workdir / "remote-k-logs"
    log_dir.mkdir()
    old = log_dir / "0123456789abcdef0123456789abcdef.log"  # a run's copy from two days ago
    old.write_text("old output\n")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    worker = workers(url, "remote-k", TOKEN, "--log-dir", str(log_dir), "--keep-logs", "1d")
    with client(url) as api:
        run_id = trigger(api, "greet")
        run_where(api, run_id, lambda r: r["state"] == "Completed", "the run to complete")
    wait_for(lambda: not old.exists(), message="the old copy deleted")
    assert (log_dir / f"{run_id}.log").exists()  # today's copy stays
    assert "deleted 1 local log copy(ies) last written more than 1d ago (--keep-logs)" in worker.output()


def test_keep_logs_must_be_a_positive_duration(workdir: Path) -> None:  # noqa: F811
    result = subprocess.run([ORCHESTRA, "worker", "--pool", "local", "--api-url", "http://127.0.0.1:9",
                             "--keep-logs", "0s"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 64, result.stderr  # a usage error, before any request
    assert "--keep-logs" in result.stderr


def test_a_wrong_or_missing_token_is_refused(daemon: DaemonProcess,
                                             workers: Callable[..., WorkerProcess]) -> None:
    url = api_url(daemon)
    for name, token in (("wrong", "not-the-token"), ("none", None)):
        worker = workers(url, name, token)
        assert worker.proc.wait(timeout=30) == 1, worker.output()
        assert "refused the token" in worker.output()
    body = {"pool": "local", "max": 1, "leaseSeconds": 30}
    assert httpx.post(f"{url}/api/v1/workers/x/claim", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(f"{url}/api/v1/workers/x/claim", json=body, headers=wrong).status_code == 401


def test_a_worker_killed_outright_leaves_its_job_to_the_next_worker_on_that_machine_to_kill(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    url = api_url(daemon)
    shared = ["--log-dir", str(workdir / "machine-logs"), "--lease", "2s"]
    first = workers(url, "remote-d", TOKEN, *shared)
    with client(url) as api:
        run_id = trigger(api, "fragile")
        run_where(api, run_id, lambda r: r["state"] == "Running", "the job to start")
        job_pid = pids(workdir, 1)[0]
        first.proc.kill()  # SIGKILL: no shutdown, the job's session survives it
        first.proc.wait(timeout=10)
        assert not is_gone(job_pid)
        crashed = run_where(api, run_id, lambda r: r["state"] == "Crashed", "the daemon to take the run back")
        assert "lease of worker remote-d expired" in crashed["stateReason"]
        workers(url, "remote-e", TOKEN, *shared)
        wait_for(lambda: is_gone(job_pid), timeout=30, message="the next worker to kill the leftover job")


def test_a_run_cancelled_through_the_daemon_is_stopped_by_its_remote_worker(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    url = api_url(daemon)
    workers(url, "remote-f")
    with client(url) as api:
        run_id = trigger(api, "fragile")
        run_where(api, run_id, lambda r: r["state"] == "Running", "the job to start")
        job_pid = pids(workdir, 1)[0]
        assert api.post(f"/runs/{run_id}/cancel").status_code == 200
        final = run_where(api, run_id, lambda r: r["state"] in TERMINAL, "the cancel to land")
        assert final["state"] == "Cancelled" and final["worker"] == "remote-f", final
        assert is_gone(job_pid)


@pytest.mark.timeout(120)
def test_a_remote_worker_short_of_open_files_leaves_the_runs_it_cannot_start_waiting(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess]) -> None:  # noqa: F811
    (workdir / "specs" / "pool.yaml").write_text(
        "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process, concurrencyLimit: 50}\n")
    (workdir / "specs" / "short.yaml").write_text(deployment("short", 'command: ["sleep", "1"]'))
    url = api_url(daemon)
    with client(url) as api:
        wait_for(lambda: api.get("/pools/local").json().get("spec", {}).get("concurrencyLimit") == 50,
                 timeout=30, message="the wider pool applied")
        run_ids = [trigger(api, "short") for _ in range(30)]
        worker = workers(url, "remote-s", TOKEN, open_files=(LOW_FILES, LOW_FILES))
        finals = [run_where(api, run_id, lambda r: r["state"] in TERMINAL, "every run to end", timeout=90)
                  for run_id in run_ids]
        assert {r["state"] for r in finals} == {"Completed"}, worker.output()
        assert {r["attempt"] for r in finals} == {1}
        put_back = [e for r in finals for e in r["events"] if (e["from"], e["to"]) == ("Pending", "Scheduled")]
        assert put_back, "the limit was never reached: the test proves nothing"
        assert "cannot start more jobs: Too many open files" in worker.output()


def test_a_remote_worker_whose_docker_engine_is_away_leaves_its_runs_waiting_and_says_so_in_status(
        workdir: Path, daemon: DaemonProcess, workers: Callable[..., WorkerProcess],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Docker host's worker started before its engine (or while it restarts): no engine is needed here,
    only a socket path where none is yet."""
    (workdir / "specs" / "boxes.yaml").write_text(DOCKER_POOL + "---\n" + deployment(
        "boxed", 'command: ["echo", "inside a box"]').replace("pool: local", "pool: boxes"))
    url = api_url(daemon)
    with client(url) as api:
        run_id = trigger(api, "boxed")
        monkeypatch.setenv("DOCKER_HOST", f"unix://{workdir / 'no-engine-yet.sock'}")
        worker = workers(url, "docker-host", TOKEN, "--pool", "boxes")
        waiting = run_where(api, run_id, lambda r: "the run waits" in r["stateReason"], "the run put back")
        assert waiting["state"] == "Scheduled" and waiting["attempt"] == 1, worker.output()
        status = wait_for(lambda: (lambda out: out if "Pool boxes: its runs WAIT since" in out else None)(
            daemon.cli("status").stdout), timeout=20, message="orchestra status to show the pool waiting")
        assert "Worker docker-host online" in status and "cannot reach the Docker engine" in status
        listed = api.get("/workers").json()["workers"]
        assert [u["pool"] for u in listed[0]["unreachable"]] == ["boxes"]
