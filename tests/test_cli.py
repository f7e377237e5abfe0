"""The CLI as a user types it: get, render, schedule, validate, default templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from orchestra.reconcile.presence import Presence
from orchestra.store import open_store
from tests.conftest import DEPLOYMENT, POOL, REPO, CliResult

Cli = Callable[..., CliResult]
Write = Callable[[str, str], Path]


def applied(cli: Cli, write: Write) -> None:
    write("specs/pool.yaml", POOL)
    write("specs/d.yaml", DEPLOYMENT)
    assert cli("apply", "specs").code == 0


def test_get_json_shapes(cli: Cli, write: Write) -> None:
    applied(cli, write)
    deployments = cli("get", "deployments", "-o", "json").json()
    assert len(deployments) == 1
    d = deployments[0]
    assert {k: d[k] for k in ("name", "pool", "queue", "paused")} == \
        {"name": "hello", "pool": "local", "queue": "default", "paused": False}
    assert d["spec"]["parameters"] == {"who": "world"} and d["source"] == "specs/d.yaml:1"
    one = cli("get", "deployment", "hello", "-o", "yaml")
    assert yaml.safe_load(one.out)["name"] == "hello"
    missing = cli("get", "deployment", "nope")
    assert missing.code == 1 and "nope" in missing.err


def test_get_table_in_a_pipe_is_plain(cli: Cli, write: Write) -> None:
    applied(cli, write)
    out = cli("get", "pools").out
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "LIMIT", "PAUSED", "SOURCE"]
    assert out.splitlines()[1].split() == ["local", "process", "4", "no", "specs/pool.yaml:1"]
    assert "\x1b[" not in out


def test_run_says_what_holds_it_back(cli: Cli, write: Write, tmp_path: Path) -> None:
    applied(cli, write)
    alone = cli("run", "hello")
    assert alone.code == 0 and alone.err == ("Note: no running daemon or online worker serves pool 'local' "
                                             "(see `orchestra status`): the run waits until one does\n")
    with open_store(cwd=tmp_path) as store:  # a daemon running every pool's jobs says it is alive
        Presence(store, lambda: datetime.now(UTC), {"paths": ["specs"], "workers": "all"}).beat()
    free = cli("run", "hello")
    assert free.code == 0 and free.err == "", free.err
    assert cli("pause", "deployment", "hello").code == 0
    assert cli("pause", "pool", "local").code == 0
    held = cli("run", "hello", "-o", "json")
    assert held.code == 0 and len(held.json()["id"]) == 32  # made all the same: it runs once resumed
    assert held.err.splitlines() == [
        "Note: Deployment/hello is paused: the run waits until `orchestra resume deployment hello`",
        "Note: WorkPool/local is paused: the run waits until `orchestra resume pool local`"]


def test_logs_of_a_run_without_output_say_why(cli: Cli, write: Write) -> None:
    applied(cli, write)
    run_id = cli("run", "hello").out.strip()
    waiting = cli("logs", run_id)
    assert waiting.code == 0 and waiting.out == ""
    assert waiting.err == f"Note: no output yet: run {run_id[:12]} is Scheduled (started by manual request)\n"
    assert cli("cancel", run_id).code == 0
    assert cli("logs", run_id).err == f"Note: no output: run {run_id[:12]} is Cancelled (cancel requested)\n"


def test_render_with_parameters_and_job_variables(cli: Cli, write: Write) -> None:
    applied(cli, write)
    result = cli("render", "hello", "--param", "who=a; rm -rf /", "--job-var", "env.LOG_LEVEL=debug", "-o", "json")
    assert result.code == 0, result.err
    job = result.json()
    assert job["command"] == ["echo", "hello a; rm -rf /"]
    assert job["env"]["LOG_LEVEL"] == "debug"
    assert job["env"]["ORCHESTRA_PARAM_WHO"] == "a; rm -rf /"
    assert json.loads(job["env"]["ORCHESTRA_PARAMETERS"]) == {"who": "a; rm -rf /"}


def test_render_rejects_bad_job_variables(cli: Cli, write: Write) -> None:
    applied(cli, write)
    result = cli("render", "hello", "--job-var", "workingDir=[1]")
    assert result.code == 1 and "workingDir" in result.err


def test_schedule_from_store_and_from_path(cli: Cli, write: Write) -> None:
    applied(cli, write)
    result = cli("schedule", "hello", "--count", "3", "--after", "2026-10-24T12:00:00Z", "-o", "json")
    assert result.json() == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    from_path = cli("schedule", "specs/d.yaml", "-n", "1", "--after", "2026-03-28T12:00:00", "-o", "json")
    assert from_path.json() == ["2026-03-29T03:00:00+02:00"]
    table = cli("schedule", "hello", "-n", "2")
    assert table.code == 0 and "Europe/Berlin" in table.out


def test_default_templates_print_and_parse(cli: Cli) -> None:
    for pool_type in ("process", "docker"):
        result = cli("pools", "default-template", pool_type, "-o", "json")
        template = result.json()
        assert set(template) == {"variables", "jobConfiguration"}
        assert template["jobConfiguration"]["command"] == "{{ command }}"
    assert cli("pools", "default-template", "k8s").code == 64


def test_validate_reports_and_exits_1(cli: Cli, write: Write) -> None:
    write("specs/pool.yaml", POOL)
    assert cli("validate", "specs").code == 0
    write("specs/d.yaml", DEPLOYMENT.replace("Europe/Berlin", "Mars/Olympus"))
    result = cli("validate", "specs")
    assert result.code == 1
    assert "specs/d.yaml:10:7: Deployment/hello: spec.schedules[0].timezone:" in result.err
    as_json = cli("validate", "specs", "-o", "json")
    assert as_json.code == 1 and as_json.json()["errors"][0]["path"] == "spec.schedules[0].timezone"


def test_installed_console_script_end_to_end(tmp_path: Path) -> None:
    """The real ``orchestra`` executable on the example specs, in a fresh directory."""
    exe = Path(sys.executable).parent / "orchestra"
    env = {**os.environ, "ORCHESTRA_DB": f"sqlite:///{tmp_path / 'e2e.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert run("validate", "specs").returncode == 0
    assert run("plan", "specs", "--detailed-exitcode").returncode == 2
    assert run("apply", "specs").returncode == 0
    second = run("apply", "specs")
    assert second.returncode == 0 and "No changes." in second.stdout
    names = [d["name"] for d in json.loads(run("get", "deployments", "-o", "json").stdout)]
    assert names == ["etl", "hello", "nightly-report"]
