"""Every command through a daemon's API prints what it prints against the store.

One real ``orchestra daemon`` subprocess (its API on a free loopback port,
with a token) for the module. Each check runs the same command twice with
the in-process CLI: with ``--db`` on the daemon's own store, and with
``--api-url`` and ``ORCHESTRA_API_TOKEN``; stdout, stderr and exit code
must be identical. The working directory is the daemon's, so both read the
same run logs and name spec files by the same relative paths.
"""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orchestra.cli.backends import LocalBackend
from orchestra.cli.remote_backend import RemoteBackend
from orchestra.client import ApiClient
from orchestra.store import open_store
from tests.conftest import CliResult
from tests.daemon_fixtures import POOL, DaemonProcess, deployment, wait_for

Cli = Callable[..., CliResult]
TOKEN = "remote-cli-token"
LISTENING = re.compile(r"API listening on (http://\S+)")
SLOW_POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: slow}\nspec: {type: process}\n"
QUEUE = "apiVersion: orchestra/v1\nkind: WorkQueue\nmetadata: {name: urgent}\nspec: {pool: local, priority: 1}\n"
GREET = deployment("greet", """
command: ["echo", "hello {{ parameters.who }} x{{ parameters.times }}"]
parameters: {who: world, times: 1}
parameterSchema:
  type: object
  properties:
    who: {type: string}
    times: {type: integer}
schedules:  # leap days only: no scheduled run changes what the module compares
  - cron: "30 2 29 2 *"
    timezone: Europe/Berlin
  - cron: "0 12 29 2 *"
""")
SLEEPY = deployment("sleepy", 'command: ["sleep", "30"]').replace("pool: local", "pool: slow")


@dataclass
class Remote:
    workdir: Path
    db: str
    url: str


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    workdir = tmp_path_factory.mktemp("remote-cli")
    specs = workdir / "specs"
    specs.mkdir()
    for name, text in {"pool.yaml": POOL + "---\n" + SLOW_POOL + "---\n" + QUEUE, "greet.yaml": GREET,
                       "sleepy.yaml": SLEEPY}.items():
        (specs / name).write_text(text)
    db = f"sqlite:///{workdir / 'orchestra.db'}"
    daemon = DaemonProcess(workdir, db)
    daemon.env["ORCHESTRA_API_TOKEN"] = TOKEN
    daemon.start()
    try:
        daemon.ready()
        found = wait_for(lambda: LISTENING.search(daemon.output()) or (daemon.proc and daemon.proc.poll()),
                         timeout=30, message="the API to listen")
        assert isinstance(found, re.Match), daemon.output()
        yield Remote(workdir, db, found.group(1))
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()


@pytest.fixture
def both(remote: Remote, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run a command against the store and through the API; assert they agree; return the result."""
    monkeypatch.chdir(remote.workdir)
    monkeypatch.delenv("ORCHESTRA_API_URL", raising=False)
    monkeypatch.setenv("ORCHESTRA_API_TOKEN", TOKEN)

    def run(*args: str, mask: Callable[[str], str] = lambda text: text) -> CliResult:
        """``mask``: what may differ between the two calls (a live daemon's last beat)."""
        local = cli("--db", remote.db, *args)
        over_api = cli("--api-url", remote.url, *args)
        assert (over_api.code, mask(over_api.out), over_api.err) == (local.code, mask(local.out), local.err), args
        return local

    return run


def over_api(remote: Remote, cli: Cli, *args: str) -> CliResult:
    return cli("--api-url", remote.url, *args)


def finished(remote: Remote, cli: Cli, run_id: str) -> dict:
    def ended() -> dict | None:
        run = over_api(remote, cli, "get", "run", run_id, "-o", "json").json()
        return run if run["state"] in {"Completed", "Failed", "Crashed", "Cancelled"} else None

    return wait_for(ended, timeout=30, message=f"run {run_id} to end")


def test_resources_print_the_same(both: Callable[..., CliResult]) -> None:
    for noun in ("pools", "queues", "deployments"):
        for fmt in ("table", "json", "yaml"):
            assert both("get", noun, "-o", fmt).code == 0
    assert "greet" in both("get", "deployment", "greet", "-o", "json").json()["name"]
    missing = both("get", "deployment", "nope")
    assert missing.code == 1 and "nope" in missing.err


def test_a_run_its_listing_details_and_logs_print_the_same(remote: Remote, cli: Cli,
                                                           both: Callable[..., CliResult]) -> None:
    started = over_api(remote, cli, "run", "greet", "--param", "who=remote", "--param", "times=3", "-o", "json")
    assert started.code == 0, started.err
    run_id = started.json()["id"]
    assert finished(remote, cli, run_id)["state"] == "Completed"
    watched = over_api(remote, cli, "run", "greet", "--watch")
    assert watched.code == 0 and "Completed" in watched.err
    for fmt in ("table", "json", "yaml"):
        both("get", "runs", "-o", fmt)
    both("get", "runs", "--deployment", "greet", "--state", "Completed", "--limit", "1", "-o", "json")
    detail = both("get", "run", run_id, "-o", "json").json()
    assert detail["job"]["command"] == ["echo", "hello remote x3"] and detail["events"]
    both("get", "run", run_id)
    assert "hello remote x3" in both("logs", run_id).out
    assert "hello remote x3" in both("logs", run_id, "--follow").out
    assert both("logs", "0000000000nope").code == 1


def test_invalid_run_input_fails_with_the_same_words(both: Callable[..., CliResult]) -> None:
    wrong_type = both("run", "greet", "--param", "times=many")
    assert wrong_type.code == 1 and "parameter times" in wrong_type.err
    assert both("run", "nope").code == 1
    assert both("render", "greet", "--param", "times=many").code == 1
    job_variable = both("render", "greet", "--job-var", "env.A=1")
    assert job_variable.code == 1 and "job jobVariables.env.A" in job_variable.err


def test_pause_resume_and_cancel_print_the_same(remote: Remote, cli: Cli, both: Callable[..., CliResult]) -> None:
    assert both("pause", "pool", "slow").out == "WorkPool/slow: paused\n"
    both("pause", "deployment", "greet")
    assert both("resume", "deployment", "greet").out == "Deployment/greet: active\n"
    waiting = [over_api(remote, cli, "run", "sleepy").out.strip() for _ in range(2)]
    local = cli("--db", remote.db, "cancel", waiting[0])
    through_api = over_api(remote, cli, "cancel", waiting[1])
    assert (local.out, through_api.out) == (f"{waiting[0]}: Cancelled\n", f"{waiting[1]}: Cancelled\n")
    again = both("cancel", waiting[0])
    assert again.code == 1 and "already Cancelled" in again.err
    assert both("resume", "pool", "slow").out == "WorkPool/slow: active\n"
    assert both("pause", "schedule", "greet/1").out == "Schedule/greet/cron:0 12 29 2 *@UTC: paused\n"
    assert both("resume", "schedule", "greet/1").out.endswith(": active\n")
    assert both("pause", "schedule", "greet/7").code == 1
    assert both("pause", "queue", "nope").code == 1


def test_status_render_and_schedule_print_the_same(both: Callable[..., CliResult]) -> None:
    beat = re.compile(r'seen \d+s ago|"seenAt": "[^"]*"')  # the daemon writes it every 10 s, maybe in between
    shown = both("status", mask=lambda text: beat.sub("", text))
    assert shown.code == 0 and " running: watching specs" in shown.out
    assert both("status", "-o", "json", mask=lambda text: beat.sub("", text)).json()["specs"]["ok"] is True
    assert both("render", "greet", "--param", "who=x", "--job-var", "env.A=x", "-o", "json").json()["command"] == \
        ["echo", "hello x x1"]
    both("render", "greet")
    for fmt in ("table", "json"):
        assert both("schedule", "greet", "--count", "4", "--after", "2030-03-30T12:00:00", "-o", fmt).code == 0


def write(base: Path, name: str, text: str) -> Path:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_plan_and_apply_send_the_files_and_print_the_same(remote: Remote, both: Callable[..., CliResult]) -> None:
    write(remote.workdir, "more/report.yaml", deployment("report", """
entrypoint: flows/report.py:main
schedules:
  - cron: "0 6 * * 1"
"""))
    write(remote.workdir, "more/flows/report.py", """
        def main(region: str = "eu", full: bool = False) -> None:
            print(region, full)
        """)
    write(remote.workdir, "more/pool.yaml", POOL)
    for args in (["plan", "more"], ["plan", "more", "-o", "json"], ["plan", "more", "--prune"],
                 ["plan", "more/report.yaml", "more/pool.yaml"], ["apply", "more", "--dry-run"],
                 ["apply", "more", "--dry-run", "-o", "json"]):
        assert both(*args).code == 0, args
    changes = both("plan", "more", "--detailed-exitcode")
    assert changes.code == 2 and "+ Deployment/report" in changes.out and "(more/report.yaml:1)" in changes.out
    schema = both("plan", "more", "-o", "json").json()["changes"][0]["diff"]
    assert {"op": "add", "path": "/spec/parameterSchema/properties/full/type", "from": None, "to": "boolean"} in schema


def test_apply_through_the_api_stores_the_clients_sources(remote: Remote, cli: Cli,
                                                          both: Callable[..., CliResult]) -> None:
    write(remote.workdir, "extra/tasks.yaml", deployment("tasks", 'command: ["true"]'))
    write(remote.workdir, "extra/pool.yaml", POOL)
    applied = over_api(remote, cli, "apply", "extra", "-o", "json")
    assert applied.code == 0, applied.err
    assert applied.json()["applied"] is True and applied.json()["summary"]["create"] == 1
    assert both("get", "deployment", "tasks", "-o", "json").json()["source"] == "extra/tasks.yaml:1"
    assert "No changes." in both("plan", "extra").out


def test_a_broken_spec_is_reported_with_its_file_and_line(remote: Remote, both: Callable[..., CliResult]) -> None:
    write(remote.workdir, "broken/pool.yaml", POOL)
    write(remote.workdir, "broken/bad.yaml", deployment("bad", """
command: ["echo"]
schedules:
  - cron: "61 * * * *"
"""))
    for command in ("plan", "apply"):
        result = both(command, "broken")
        assert result.code == 1 and "broken/bad.yaml:8:" in result.err and "nothing was changed" in result.err
    json_plan = both("plan", "broken", "-o", "json")
    assert json_plan.code == 1 and "broken/bad.yaml:8:" in json_plan.err


def test_a_wrong_token_is_refused_in_plain_words(remote: Remote, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_API_TOKEN", "wrong")
    refused = over_api(remote, cli, "get", "pools")
    assert refused.code == 1 and refused.out == ""
    assert f"the orchestra API at {remote.url} refused the token" in refused.err
    token_file = remote.workdir / "token"
    token_file.write_text(TOKEN + "\n")
    with_file = cli("--api-url", remote.url, "--api-token-file", str(token_file), "get", "pools", "-o", "json")
    assert with_file.code == 0 and {"local", "slow"} <= {p["name"] for p in with_file.json()}


def test_an_unreachable_daemon_is_a_clear_error(cli: Cli) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("--api-url", f"http://127.0.0.1:{port}", "get", "runs")
    assert result.code == 1 and result.out == ""
    assert f"cannot reach the orchestra API at http://127.0.0.1:{port}" in result.err


def test_the_daemon_does_not_take_an_api_url(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    result = cli("--api-url", "http://127.0.0.1:9", "daemon", "specs")
    assert result.code == 64 and "does not talk to another daemon" in result.err


def test_pruning_everything_through_the_api_is_refused(remote: Remote, cli: Cli,
                                                       both: Callable[..., CliResult]) -> None:
    (remote.workdir / "nothing").mkdir()
    refused = over_api(remote, cli, "apply", "nothing", "--prune")
    assert refused.code == 1 and "the files define no resources" in refused.err
    assert "greet" in both("get", "deployments").out


def test_both_backends_export_the_same_documents(remote: Remote, both: Callable[..., CliResult]) -> None:
    with httpx.Client(base_url=remote.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as api:
        created = api.post("/api/v1/deployments", json={"metadata": {"name": "api-made"},
                                                        "spec": {"pool": "local", "command": ["true"]}})
        assert created.status_code == 201, created.text
    store = open_store(remote.db)
    local = LocalBackend(store, remote.workdir / ".orchestra" / "logs")
    through_api = RemoteBackend(ApiClient(remote.url, TOKEN))
    try:
        documents = local.export_documents(None, None)
        assert [d["metadata"]["name"] for d in documents] == ["api-made"]
        assert through_api.export_documents("Deployment", "api-made") == documents
        assert through_api.list_resources() == local.list_resources()
    finally:
        through_api.close()
        local.close()
    exported = both("export", "deployment", "api-made")
    assert exported.code == 0 and "name: api-made" in exported.out


def test_runs_and_logs_read_a_page_at_a_time_give_the_same(remote: Remote, cli: Cli, both: Callable[..., CliResult],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.cli import remote_backend

    run_id = over_api(remote, cli, "run", "greet", "--param", "who=wörld ✓").out.strip()
    assert finished(remote, cli, run_id)["state"] == "Completed"
    monkeypatch.setattr(remote_backend, "RUNS_PAGE", 1)
    monkeypatch.setattr(remote_backend, "LOG_PAGE", 3)  # pages that end inside multi-byte characters
    assert len(both("get", "runs", "--limit", "3", "-o", "json").json()) == 3
    assert "hello wörld ✓ x1" in both("logs", run_id).out
