"""Plans as data and as golden text; apply idempotence and prune rules via the CLI."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from orchestra.planning.plan import compute_plan
from orchestra.planning.render import render_plan
from orchestra.specs.validate import load_specs
from tests.conftest import DEPLOYMENT, POOL, CliResult

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)


def plain(markup: str) -> str:
    buffer = io.StringIO()
    Console(file=buffer, no_color=True, width=200, highlight=False, soft_wrap=True).print(markup)
    return buffer.getvalue()


def test_create_plan_golden_text(write: Callable[[str, str], Path], tmp_path: Path) -> None:
    write("pool.yaml", POOL)
    write("d.yaml", DEPLOYMENT)
    specs = load_specs([tmp_path])
    plan = compute_plan(specs.resources, [], prune=False, now=NOW)
    text = plain(render_plan(plan)).replace(str(tmp_path) + "/", "")
    assert text == """\
orchestra would perform the following actions:

  + WorkPool/local  (pool.yaml:1)
      + /metadata/name: "local"
      + /spec/type: "process"
      + /spec/concurrencyLimit: 4

  + Deployment/hello  (d.yaml:1)
      + /metadata/name: "hello"
      + /spec/command/0: "echo"
      + /spec/command/1: "hello {{ parameters.who }}"
      + /spec/pool: "local"
      + /spec/parameters/who: "world"
      + /spec/schedules/0/cron: "30 2 * * *"
      + /spec/schedules/0/timezone: "Europe/Berlin"
      next runs of cron:30 2 * * *@Europe/Berlin (Europe/Berlin): 2026-03-29T03:00:00+02:00, \
2026-03-30T02:30:00+02:00, 2026-03-31T02:30:00+02:00

Plan: 2 to create, 0 to update, 0 to delete (0 unchanged).
"""
    assert plan.to_json()["summary"] == {"create": 2, "update": 0, "delete": 0}


def test_plan_json_shape_and_field_diff(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    write("specs/d.yaml", DEPLOYMENT)
    assert cli("apply", "specs").code == 0
    write("specs/d.yaml", DEPLOYMENT.replace("30 2 * * *", "0 4 * * *").replace("world", "team"))
    result = cli("plan", "specs", "-o", "json", "--detailed-exitcode")
    assert result.code == 2, result.err
    data = result.json()
    assert data["summary"] == {"create": 0, "update": 1, "delete": 0}
    change = data["changes"][0]
    assert (change["action"], change["kind"], change["name"], change["source"]) == \
        ("update", "Deployment", "hello", "specs/d.yaml:1")
    assert change["diff"] == [
        {"op": "replace", "path": "/spec/parameters/who", "from": "world", "to": "team"},
        {"op": "replace", "path": "/spec/schedules/0/cron", "from": "30 2 * * *", "to": "0 4 * * *"},
    ]
    assert change["nextRuns"][0]["timezone"] == "Europe/Berlin"
    assert all(t.endswith(("+01:00", "+02:00")) for t in change["nextRuns"][0]["times"])


def test_second_apply_has_nothing_to_do(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    write("specs/d.yaml", DEPLOYMENT)
    first = cli("apply", "specs")
    assert first.code == 0 and "Apply complete! 2 created, 0 updated, 0 deleted." in first.out
    second = cli("apply", "specs")
    assert second.code == 0 and "No changes." in second.out
    assert cli("plan", "specs", "--detailed-exitcode").code == 0


def test_invalid_specs_change_nothing(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    write("specs/d.yaml", DEPLOYMENT)
    write("specs/bad.yaml", DEPLOYMENT.replace("name: hello", "name: other").replace("pool: local", "pool: gone"))
    result = cli("apply", "specs")
    assert result.code == 1
    assert "Deployment/other: spec.pool: WorkPool/gone not found" in result.err
    assert "nothing was changed" in result.err
    assert cli("get", "deployments", "-o", "json").json() == []


def test_prune_deletes_only_spec_managed(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    d = write("specs/d.yaml", DEPLOYMENT)
    cli("apply", "specs")
    d.unlink()
    plan = cli("plan", "specs", "-o", "json")
    assert plan.json()["summary"]["delete"] == 0
    assert any("apply --prune deletes it" in n for n in plan.json()["notes"])
    pruned = cli("apply", "specs", "--prune", "-o", "json")
    assert pruned.json()["summary"] == {"create": 0, "update": 0, "delete": 1}
    assert cli("get", "deployments", "-o", "json").json() == []


def test_detailed_exit_codes(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    assert cli("plan", "specs", "--detailed-exitcode").code == 2
    assert cli("plan", "specs").code == 0
    write("specs/bad.yaml", "a: [\n")
    assert cli("plan", "specs", "--detailed-exitcode").code == 1
    assert cli("plan", "--no-such-flag", "specs").code == 64
    assert cli("plan").code == 64


def test_dry_run_applies_nothing(cli: Callable[..., CliResult], write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    result = cli("apply", "specs", "--dry-run")
    assert result.code == 0 and "+ WorkPool/local" in result.out
    assert cli("get", "pools", "-o", "json").json() == []


def test_unchanged_deployment_is_rechecked_when_its_pool_changes(cli: Callable[..., CliResult],
                                                                  write: Callable[[str, str], Path]) -> None:
    """The no-change fast path trusts a stored resource only while what it uses is unchanged too."""
    write("specs/pool.yaml", POOL)
    write("specs/d.yaml", DEPLOYMENT.replace("  schedules:", "  jobVariables: {workingDir: /tmp}\n  schedules:"))
    assert cli("apply", "specs").code == 0
    strict_pool = POOL.replace("spec: {type: process, concurrencyLimit: 4}", """spec:
  type: process
  baseJobTemplate:
    variables: {type: object, additionalProperties: false, properties: {env: {type: object, default: {}}}}
    jobConfiguration: {command: "{{ command }}", env: "{{ env }}"}""")
    write("specs/pool.yaml", strict_pool)
    result = cli("plan", "specs")
    assert result.code == 1
    assert "Deployment/hello: spec.jobVariables" in result.err
