"""Secret canaries never leave the server: a real daemon, real HTTP, the CLI as a user types it.

Random canary values go in as a secret parameter given by value (through the API and through
the CLI), as a secret parameter default in a spec file, as a ``secretRef`` to an environment
variable of the daemon (resolved by its worker at launch) and as a secret pool variable
default. The job writes what it received to a file (never to its output), which proves it got
the real values; then every response, every CLI output, the daemon's own log and the runs
stored in the database are searched for the canaries.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra.store import open_store
from tests.conftest import CliResult
from tests.daemon_fixtures import DaemonProcess, daemon_factory, deployment, wait_for, workdir  # noqa: F401

Factory = Callable[..., DaemonProcess]
TOKEN = "secrets-test-token"
LISTENING = re.compile(r"API listening on (http://\S+)")
ENDED = {"Completed", "Failed", "Crashed", "Cancelled"}


def canary(kind: str) -> str:
    return f"canary-{kind}-{secrets.token_hex(8)}"


CANARIES = {name: canary(name) for name in ("api", "cli", "env", "pool", "spec", "bad")}
MISSING_VARIABLE = "ORCHESTRA_TEST_SECRET_" + secrets.token_hex(4).upper()

POOL = f"""\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {{name: local}}
spec:
  type: process
  concurrencyLimit: 4
  baseJobTemplate:
    variables:
      type: object
      properties:
        env:
          type: object
          additionalProperties: {{type: string}}
          properties: {{API_KEY: {{type: string, writeOnly: true}}}}
          default: {{API_KEY: {CANARIES["pool"]}}}
        workingDir: {{type: string, default: "."}}
    jobConfiguration:
      command: "{{{{ command }}}}"
      env: "{{{{ env }}}}"
      workingDir: "{{{{ workingDir }}}}"
"""

# The job proves what it received by writing it to a file; it prints nothing secret.
WRITER = """\
import json, os, sys
values = {"password": os.environ["ORCHESTRA_PARAM_PASSWORD"], "token": os.environ["TOKEN"],
          "apiKey": os.environ["API_KEY"], "parameters": json.loads(os.environ["ORCHESTRA_PARAMETERS"])}
with open(os.path.join(os.environ["OUT_DIR"], os.environ["ORCHESTRA_RUN_ID"] + ".json"), "w") as out:
    json.dump(values, out)
print("wrote the values of run", os.environ["ORCHESTRA_RUN_ID"])
"""


def vault(name: str, out_dir: Path, token_ref: str) -> str:
    return deployment(name, f"""
command: ["{sys.executable}", "writer.py"]
parameterSchema:
  type: object
  properties:
    password: {{type: string, format: password, pattern: "^[a-z0-9-]+$"}}
    region: {{type: string}}
parameters: {{password: {CANARIES["spec"]}, region: eu}}
jobVariables:
  env:
    OUT_DIR: "{out_dir}"
    TOKEN: {{secretRef: {{env: {token_ref}}}}}
""")


@pytest.fixture
def daemon(workdir: Path, daemon_factory: Factory, tmp_path: Path) -> Iterator[tuple[DaemonProcess, str]]:
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    specs = workdir / "specs"
    (specs / "pool.yaml").write_text(POOL)
    (specs / "writer.py").write_text(WRITER)
    (specs / "vault.yaml").write_text(vault("vault", out_dir, "SECRET_CANARY_ENV"))
    (specs / "missing.yaml").write_text(vault("missing", out_dir, MISSING_VARIABLE))
    process = daemon_factory("--port", "0")
    process.env.update(ORCHESTRA_API_TOKEN=TOKEN, SECRET_CANARY_ENV=CANARIES["env"])
    process.env.pop(MISSING_VARIABLE, None)
    process.start()
    found = wait_for(lambda: LISTENING.search(process.output()) or (process.proc and process.proc.poll() is not None),
                     timeout=30, message="the API to listen")
    assert isinstance(found, re.Match), process.output()
    yield process, found.group(1)
    process.stop()


def _ended(api: httpx.Client, run_id: str) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        return run if run["state"] in ENDED else None

    return wait_for(look, timeout=30, message=f"run {run_id} to end")


def _events(url: str, until: str) -> str:
    """The event stream from its start, read until ``until`` shows (bounded by time and size)."""
    seen = ""
    deadline = time.monotonic() + 10
    headers = {"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": "0"}
    with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=10) as response:
        for chunk in response.iter_text():
            seen += chunk
            if until in seen or time.monotonic() > deadline or len(seen) > 1_000_000:
                break
    return seen


def test_secret_canaries_never_appear_in_any_response_output_log_or_stored_job(
        daemon: tuple[DaemonProcess, str], tmp_path: Path, workdir: Path, cli: Callable[..., CliResult]) -> None:
    process, url = daemon

    def orchestra(*args: str) -> CliResult:
        """The CLI in-process (a subprocess per command costs seconds here), on the daemon's store."""
        return cli("--db", process.db_url, *args)
    shown: list[tuple[str, str]] = []  # (where, text) of everything that left the server

    def keep(where: str, text: str) -> str:
        shown.append((where, text))
        return text

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as api:
        wait_for(lambda: api.get("/api/v1/deployments/missing").status_code == 200, timeout=30,
                 message="specs applied")
        created = api.post("/api/v1/deployments/vault/runs", json={"parameters": {"password": CANARIES["api"]}})
        assert created.status_code == 201, keep("POST runs", created.text)
        by_api = keep("POST runs", created.text) and created.json()["id"]
        ran = orchestra("run", "vault", "--param", f"password={CANARIES['cli']}", "-o", "json")
        assert ran.code == 0, ran.err
        by_cli = json.loads(keep("orchestra run", ran.out + ran.err))["id"]
        missing = api.post("/api/v1/deployments/missing/runs", json={}).json()["id"]

        # The jobs got the real values.
        for run_id, password in ((by_api, CANARIES["api"]), (by_cli, CANARIES["cli"])):
            assert _ended(api, run_id)["state"] == "Completed"
            received = json.loads((tmp_path / "received" / f"{run_id}.json").read_text())
            assert received == {"password": password, "token": CANARIES["env"], "apiKey": CANARIES["pool"],
                                "parameters": {"password": password, "region": "eu"}}

        # A reference that cannot be resolved fails the run, naming the reference.
        failed = _ended(api, missing)
        assert failed["state"] == "Failed"
        assert f"<secret:env:{MISSING_VARIABLE}>" in failed["stateReason"]
        assert "not set on this worker" in failed["stateReason"]

        # A value that breaks the secret field's schema is refused without being quoted.
        refused = api.post("/api/v1/deployments/vault/runs", json={"parameters": {"password": CANARIES["bad"].upper()}})
        assert refused.status_code == 422
        assert keep("422", refused.text) and refused.json()["detail"][0]["loc"] == ["body", "parameters", "password"]
        bad_cli = orchestra("run", "vault", "--param", f"password={CANARIES['bad'].upper()}")
        assert bad_cli.code != 0 and "password" in keep("orchestra run (invalid)", bad_cli.err)

        for path in ("/api/v1/runs", "/api/v1/deployments", "/api/v1/deployments/vault", "/api/v1/pools",
                     "/api/v1/pools/local", "/api/v1/plan", "/api/v1/deployments/vault/upcoming"):
            response = api.get(path)
            assert response.status_code == 200, (path, response.text)
            keep(path, response.text)
        for run_id in (by_api, by_cli, missing):
            detail = api.get(f"/api/v1/runs/{run_id}")
            keep("GET run", detail.text)
            keep("logs", api.get(f"/api/v1/runs/{run_id}/logs").text)
            keep("log stream", api.get(f"/api/v1/runs/{run_id}/logs/stream").text)
        assert detail.json()["job"] is None  # it failed before it started: the reference could not be read
        by_api_detail = api.get(f"/api/v1/runs/{by_api}").json()
        assert by_api_detail["job"]["env"]["API_KEY"] == "***"
        assert by_api_detail["job"]["env"]["TOKEN"] == "<secret:env:SECRET_CANARY_ENV>"
        assert by_api_detail["job"]["env"]["ORCHESTRA_PARAM_PASSWORD"] == "***"
        assert by_api_detail["parameters"]["password"] == "***"
    events = keep("events", _events(url, missing))
    assert missing in events and by_api in events

    for args in (("get", "runs", "-o", "json"), ("get", "runs", "-o", "yaml"), ("get", "runs"),
                 ("get", "run", by_api, "-o", "json"), ("get", "run", by_cli, "-o", "yaml"),
                 ("get", "deployments", "-o", "json"), ("get", "deployments", "vault", "-o", "yaml"),
                 ("get", "pools", "-o", "json"), ("get", "pools", "local", "-o", "yaml"),
                 ("render", "vault", "--param", f"password={CANARIES['cli']}", "-o", "json"),
                 ("render", "vault", "-o", "yaml"), ("plan", "specs"), ("plan", "specs", "-o", "json"),
                 ("status",), ("logs", by_api)):
        result = orchestra(*args)
        assert result.code == 0, (args, result.err)
        keep(" ".join(args), result.out + result.err)
    rendered = orchestra("render", "vault", "--param", f"password={CANARIES['cli']}", "-o", "json")
    assert json.loads(rendered.out)["env"]["TOKEN"] == "<secret:env:SECRET_CANARY_ENV>"

    # A changed secret default shows in a plan as "(sensitive value)", old and new.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "pool.yaml").write_text(POOL)
    (changed / "vault.yaml").write_text(vault("vault", tmp_path, "SECRET_CANARY_ENV").replace(
        CANARIES["spec"], CANARIES["spec"] + "-new"))
    text_plan = keep("plan changed", orchestra("plan", str(changed)).out)
    assert "/spec/parameters/password: (sensitive value) -> (sensitive value)" in text_plan
    json_plan = orchestra("plan", str(changed), "-o", "json")
    keep("plan changed -o json", json_plan.out)
    [change] = [c for c in json.loads(json_plan.out)["changes"] if c["name"] == "vault"]
    assert {"op": "replace", "path": "/spec/parameters/password", "from": "(sensitive value)",
            "to": "(sensitive value)"} in change["diff"]

    # A secret default that breaks its schema: the daemon reports the spec error without the value.
    (workdir / "specs" / "broken.yaml").write_text(vault("broken", tmp_path, "X").replace(
        CANARIES["spec"], CANARIES["bad"].upper()))
    status = wait_for(lambda: (r := orchestra("status", "-o", "json")).code == 0
                      and not json.loads(r.out)["specs"]["ok"] and r, timeout=30, message="the spec error")
    keep("status (broken)", status.out)
    [error] = json.loads(status.out)["specs"]["errors"]
    assert error["resource"] == "Deployment/broken" and error["message"].startswith("the secret value (not shown)")
    keep("plan (broken)", orchestra("plan", "specs").err)

    with open_store(process.db_url) as store:
        stored = [store.get_run(run_id) for run_id in (by_api, by_cli, missing)]
    process.stop()
    keep("daemon log", process.output())
    # Parameters given by value stay in the store (a retry needs them); jobs and patches are masked.
    assert stored[0].parameters["password"] == CANARIES["api"]
    keep("stored jobs", json.dumps([[run.job, run.variables_patch] for run in stored]))

    leaks = [(where, name) for where, text in shown for name, value in CANARIES.items()
             if value in text or value.upper() in text]
    assert leaks == [], leaks
    assert len(shown) > 30
