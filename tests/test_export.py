"""``orchestra export``: API-managed resources as YAML that round-trips through git."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestra.reconcile.managed import create_resource
from orchestra.store import open_store
from tests.api_fixtures import LiveApi, api_factory_fixture, api_fixture  # noqa: F401
from tests.conftest import POOL, CliResult

TRICKY = {"flag": "on", "octal": "0o17", "clock": "12:30", "empty": "", "number": 7, "script": "line one\nline two\n"}


def _make_api_resources(cwd: Path) -> None:
    with open_store(cwd=cwd) as store:
        create_resource(store, "WorkQueue", {"metadata": {"name": "bulk", "description": "from the ETL system"},
                                             "spec": {"pool": "local", "priority": 3}}, root=cwd)
        create_resource(store, "Deployment", {
            "metadata": {"name": "ingest", "labels": {"team": "ext", "tier": "2"}},
            "spec": {"pool": "local", "queue": "bulk", "command": ["echo", "{{ parameters.flag }}"],
                     "parameters": TRICKY,
                     "schedules": [{"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}]},
        }, root=cwd)


@pytest.fixture
def exported(cli: Callable[..., CliResult], write: Callable[[str, str], Path], tmp_path: Path) -> str:
    write("specs/pool.yaml", POOL)
    assert cli("apply", "specs").code == 0
    _make_api_resources(tmp_path)
    result = cli("export")
    assert result.code == 0, result.err
    return result.out


def test_export_prints_only_the_spec_of_api_managed_resources(exported: str) -> None:
    documents = list(yaml.safe_load_all(exported))
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [("WorkQueue", "bulk"), ("Deployment", "ingest")]
    assert all(list(d) == ["apiVersion", "kind", "metadata", "spec"] for d in documents)
    assert list(documents[1]["metadata"]) == ["name", "labels"]
    assert "paused" not in exported and "generation" not in exported and "manager" not in exported


def test_exported_yaml_round_trips_into_a_take_over(cli: Callable[..., CliResult], exported: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "specs" / "exported.yaml").write_text(exported)
    validated = cli("validate", "specs")
    assert validated.code == 0, validated.err
    plan = cli("plan", "specs", "--prune", "-o", "json").json()
    assert plan["summary"] == {"create": 0, "update": 2, "delete": 0}
    assert all(c["diff"] == [] and any("taken over from the API" in n for n in c["notes"]) for c in plan["changes"])
    assert plan["apiManaged"] == []
    assert cli("apply", "specs", "--prune").code == 0
    with open_store(cwd=tmp_path) as store:
        ingest = store.get_resource("Deployment", "ingest")
        assert ingest.manager == "specs" and ingest.spec["parameters"] == TRICKY
    assert cli("plan", "specs", "--detailed-exitcode").code == 0
    assert cli("export").err == "No API-managed resources to export.\n"


def test_export_is_stable(cli: Callable[..., CliResult], exported: str) -> None:
    assert cli("export").out == exported


@pytest.mark.parametrize(("args", "names"), [
    (("deployment",), ["ingest"]), (("queues",), ["bulk"]), (("Deployment", "ingest"), ["ingest"]), (("pool",), []),
])
def test_export_by_kind_and_name(cli: Callable[..., CliResult], exported: str, args: tuple[str, ...],
                                 names: list[str]) -> None:
    out = cli("export", *args).out
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out) if d] == names


def test_export_of_a_spec_managed_or_unknown_name_says_so(cli: Callable[..., CliResult], exported: str) -> None:
    spec_managed = cli("export", "pool", "local")
    assert spec_managed.code == 1 and "WorkPool/local is not API-managed" in spec_managed.err
    unknown = cli("export", "deployment", "ghost")
    assert unknown.code == 1 and "'ghost' not found" in unknown.err
    assert cli("export", "gizmo").code == 64


def test_plan_text_notes_api_managed_resources(cli: Callable[..., CliResult], exported: str) -> None:
    out = cli("plan", "specs", "--prune").out
    assert "Deployment/ingest is managed by the API (not in specs; never pruned; orchestra export prints it as YAML)" \
        in out
    assert "No changes." in out


def test_the_export_route_gives_json_or_yaml(api: LiveApi) -> None:
    body: dict[str, Any] = {"metadata": {"name": "ingest"}, "spec": {"command": ["true"], "pool": "local"}}
    assert api.client.post("/api/v1/deployments", json=body).status_code == 201
    documents = api.client.get("/api/v1/export").json()
    assert documents == [{"apiVersion": "orchestra/v1", "kind": "Deployment", **body}]
    response = api.client.get("/api/v1/export", params={"format": "yaml", "kind": "Deployment", "name": "ingest"})
    assert response.headers["content-type"].startswith("application/yaml")
    assert list(yaml.safe_load_all(response.text)) == documents
    assert api.client.get("/api/v1/export", params={"name": "hello"}).status_code == 404
    assert api.client.get("/api/v1/export", params={"kind": "WorkQueue"}).json() == []
