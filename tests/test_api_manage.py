"""API-managed resources over real HTTP: create, replace, delete, schedules, and how
plan, apply --prune and the scheduler treat them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.scheduler import Scheduler
from tests.api_fixtures import T0, LiveApi, api_factory_fixture, api_fixture  # noqa: F401


def _deployment(name: str = "ingest", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"team": "ext"}},
            "spec": {"command": ["echo", "{{ parameters.source }}"], "pool": "local",
                     "parameters": {"source": "s3"}, **spec}}


def _create(api: LiveApi, body: dict[str, Any], noun: str = "deployments") -> dict[str, Any]:
    response = api.client.post(f"/api/v1/{noun}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_created_deployment_is_api_managed_and_listed(api: LiveApi) -> None:
    created = _create(api, _deployment(schedules=[{"cron": "0 3 * * *", "name": "nightly"}]))
    assert (created["manager"], created["source"], created["generation"]) == ("api", None, 1)
    assert created["nextRuns"][0]["schedule"] == "nightly"
    listed = {d["name"]: d["manager"] for d in api.client.get("/api/v1/deployments").json()}
    assert listed == {"hello": "specs", "etl-nightly": "specs", "ingest": "api"}
    stored = api.store.get_resource("Deployment", "ingest")
    assert stored.manager == "api" and stored.spec["parameters"] == {"source": "s3"}


def test_a_queue_can_be_created_and_used_by_an_api_deployment(api: LiveApi) -> None:
    queue = _create(api, {"apiVersion": "orchestra/v1", "kind": "WorkQueue", "metadata": {"name": "bulk"},
                          "spec": {"pool": "local", "priority": 5}}, noun="queues")
    assert (queue["kind"], queue["pool"], queue["manager"]) == ("WorkQueue", "local", "api")
    assert _create(api, _deployment(queue="bulk"))["queue"] == "bulk"
    refused = api.client.delete("/api/v1/queues/bulk")
    assert refused.status_code == 409 and "Deployment/ingest" in refused.json()["detail"]


@pytest.mark.parametrize(("spec", "loc", "words"), [
    ({"schedules": [{"cron": "61 * * * *"}]}, ["body", "spec", "schedules", 0, "cron"], "out of range"),
    ({"pool": "nowhere"}, ["body", "spec", "pool"], "WorkPool/nowhere not found"),
    ({"queue": "missing"}, ["body", "spec", "queue"], "WorkQueue/missing not found"),
    ({"timeout": "soon"}, ["body", "spec", "timeout"], "not a duration"),
    ({"schedules": [{"cron": "0 * * * *", "timezone": "Mars/Olympus"}]}, ["body", "spec", "schedules", 0, "timezone"],
     "Mars/Olympus"),
    ({"parameterSchema": {"type": "object", "properties": {"source": {"type": "integer"}}}},
     ["body", "spec", "parameters", "source"], "integer"),
    ({"command": ["echo", "{{ parameters.source | nosuchfilter }}"]}, ["body", "spec", "command", 1], "nosuchfilter"),
    ({"colour": "blue"}, ["body", "spec", "colour"], "unknown field"),
])
def test_an_invalid_document_is_a_422_naming_each_field(api: LiveApi, spec: dict[str, Any], loc: list[Any],
                                                          words: str) -> None:
    response = api.client.post("/api/v1/deployments", json=_deployment(**spec))
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(p["loc"] == loc and words in p["msg"] for p in problems), problems
    assert api.client.get("/api/v1/deployments/ingest").status_code == 404


def test_every_problem_is_reported_at_once(api: LiveApi) -> None:
    body = _deployment(pool="nowhere", schedules=[{"cron": "61 * * * *"}])
    locs = [p["loc"] for p in api.client.post("/api/v1/deployments", json=body).json()["detail"]]
    assert ["body", "spec", "pool"] in locs and ["body", "spec", "schedules", 0, "cron"] in locs


def test_the_kind_and_name_must_match_the_address(api: LiveApi) -> None:
    wrong_kind = api.client.post("/api/v1/deployments", json={**_deployment(), "kind": "WorkQueue"})
    assert wrong_kind.status_code == 422 and wrong_kind.json()["detail"][0]["loc"] == ["body", "kind"]
    _create(api, _deployment())
    renamed = api.client.put("/api/v1/deployments/ingest", json=_deployment("other"))
    assert renamed.status_code == 422 and renamed.json()["detail"][0]["loc"] == ["body", "metadata", "name"]


def test_a_taken_name_is_a_409(api: LiveApi) -> None:
    response = api.client.post("/api/v1/deployments", json=_deployment("hello"))
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


def test_replace_changes_the_spec_and_keeps_runtime_pause(api: LiveApi) -> None:
    _create(api, _deployment())
    assert api.client.post("/api/v1/deployments/ingest/pause").json()["paused"] is True
    replaced = api.client.put("/api/v1/deployments/ingest", json=_deployment(timeout="10m"))
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["generation"], body["spec"]["timeout"], body["paused"]) == (2, "10m", True)


def test_spec_managed_resources_are_refused_with_where_to_change_them(api: LiveApi) -> None:
    for call in (lambda: api.client.put("/api/v1/deployments/hello", json=_deployment("hello")),
                 lambda: api.client.delete("/api/v1/deployments/hello"),
                 lambda: api.client.delete("/api/v1/queues/critical"),
                 lambda: api.client.post("/api/v1/deployments/hello/schedules", json={"interval": "1h"}),
                 lambda: api.client.delete("/api/v1/deployments/hello/schedules/0")):
        response = call()
        assert response.status_code == 409, response.text
        assert response.json()["detail"].endswith("; change it in git")
    detail = api.client.delete("/api/v1/deployments/hello").json()["detail"]
    assert detail.startswith("Deployment/hello is managed by ") and "hello.yaml:1" in detail
    assert api.store.get_resource("Deployment", "hello").manager == "specs"


def test_unknown_names_are_404(api: LiveApi) -> None:
    assert api.client.put("/api/v1/deployments/ghost", json=_deployment("ghost")).status_code == 404
    assert api.client.delete("/api/v1/deployments/ghost").status_code == 404
    assert api.client.post("/api/v1/deployments/ghost/schedules", json={"interval": "1h"}).status_code == 404


def test_delete_removes_an_api_deployment(api: LiveApi) -> None:
    _create(api, _deployment())
    assert api.client.delete("/api/v1/deployments/ingest").status_code == 204
    assert api.client.get("/api/v1/deployments/ingest").status_code == 404


def test_schedules_are_added_and_removed_by_name_or_index(api: LiveApi) -> None:
    _create(api, _deployment(schedules=[{"cron": "0 3 * * *", "name": "nightly"}]))
    added = api.client.post("/api/v1/deployments/ingest/schedules", json={"interval": "15m", "name": "often"})
    assert added.status_code == 201, added.text
    assert [r["schedule"] for r in added.json()["nextRuns"]] == ["nightly", "often"]
    assert [r["schedule"] for r in api.client.delete("/api/v1/deployments/ingest/schedules/nightly").json()
            ["nextRuns"]] == ["often"]
    assert api.client.delete("/api/v1/deployments/ingest/schedules/0").json()["nextRuns"] == []
    missing = api.client.delete("/api/v1/deployments/ingest/schedules/0")
    assert missing.status_code == 404 and "has no schedule" in missing.json()["detail"]


@pytest.mark.parametrize(("schedule", "loc", "words"), [
    ({"cron": "0 25 * * *"}, ["body", "cron"], "out of range"),
    ({"interval": "sometimes"}, ["body", "interval"], "not a duration"),
    ({"cron": "0 3 * * *", "name": "nightly"}, ["body"], "same schedule as schedules[0]"),
    ({"interval": "1h", "parameters": {"source": 7}}, ["body", "parameters", "source"], "string"),
])
def test_an_invalid_schedule_is_a_422_naming_its_field(api: LiveApi, schedule: dict[str, Any], loc: list[Any],
                                                         words: str) -> None:
    schema = {"type": "object", "properties": {"source": {"type": "string"}}}
    _create(api, _deployment(parameterSchema=schema, schedules=[{"cron": "0 3 * * *", "name": "nightly"}]))
    response = api.client.post("/api/v1/deployments/ingest/schedules", json=schedule)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(p["loc"] == loc and words in p["msg"] for p in problems), problems
    assert len(api.store.get_resource("Deployment", "ingest").spec["schedules"]) == 1


def test_plan_shows_api_resources_and_apply_prune_keeps_them(api: LiveApi) -> None:
    _create(api, _deployment())
    plan = api.client.get("/api/v1/plan").json()
    assert plan["apiManaged"] == [{"kind": "Deployment", "name": "ingest"}]
    assert plan["summary"] == {"create": 0, "update": 0, "delete": 0}
    assert any("Deployment/ingest is managed by the API" in note and "never pruned" in note for note in plan["notes"])
    apply_plan(api.store, plan_specs(api.store, [api.spec_dir], prune=True, now=T0))
    assert api.store.get_resource("Deployment", "ingest").manager == "api"


def test_a_spec_declaring_the_same_name_takes_it_over(api: LiveApi) -> None:
    _create(api, _deployment())
    (api.spec_dir / "ingest.yaml").write_text(
        "apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {name: ingest}\n"
        "spec: {command: ['true'], pool: local}\n")
    plan = api.client.get("/api/v1/plan").json()
    [change] = plan["changes"]
    assert (change["action"], change["name"]) == ("update", "ingest")
    assert any("taken over from the API" in note for note in change["notes"])
    assert plan["apiManaged"] == []
    apply_plan(api.store, plan_specs(api.store, [api.spec_dir], prune=True, now=T0))
    assert api.store.get_resource("Deployment", "ingest").manager == "specs"
    assert api.client.delete("/api/v1/deployments/ingest").status_code == 409


def test_the_scheduler_picks_up_api_created_deployments_and_schedules(api: LiveApi) -> None:
    scheduler = Scheduler(api.store)
    now = api.store.get_resource("Deployment", "hello").updated_at.replace(second=0, microsecond=0)
    scheduler.tick(now)
    _create(api, _deployment(schedules=[{"interval": "1m", "name": "every-minute"}]))
    later = max(now, api.store.get_resource("Deployment", "ingest").updated_at) + timedelta(minutes=2)
    scheduler.tick(later)
    runs = api.store.list_runs(deployment="ingest")
    assert runs and {r.schedule_identity for r in runs} == {"every-minute"}
    api.client.post("/api/v1/deployments/ingest/schedules", json={"interval": "1m", "name": "second", "anchor":
                                                                   "2030-01-01T00:00:30Z"})
    scheduler.tick(later + timedelta(minutes=2))
    assert "second" in {r.schedule_identity for r in api.store.list_runs(deployment="ingest", limit=100)}


def test_a_schedule_is_stored_as_sent(api: LiveApi) -> None:
    _create(api, _deployment())
    sent = {"interval": 90, "anchor": "2030-01-01T00:00:30Z", "parameters": {"source": "ftp"}}
    added = api.client.post("/api/v1/deployments/ingest/schedules", json=sent)
    assert added.status_code == 201, added.text
    assert api.store.get_resource("Deployment", "ingest").spec["schedules"] == [sent]
