"""The HTTP API's resources, plan, runs and operations, over real HTTP.

A live uvicorn server (``tests.api_fixtures``) over a SQLite store with a
small spec tree applied; the tests check the responses and, for writes, the
state the store ends up in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from orchestra.api.shapes import run_json
from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.store import CANCELLED, RUNNING, PENDING
from tests.api_fixtures import LiveApi, api_factory_fixture, api_fixture, apply_specs  # noqa: F401

# -- resources ------------------------------------------------------------------------


@pytest.mark.parametrize(("noun", "names"), [
    ("pools", ["local", "spare"]), ("queues", ["critical"]), ("deployments", ["etl-nightly", "hello"]),
])
def test_lists_each_kind_with_its_status(api: LiveApi, noun: str, names: list[str]) -> None:
    listed = api.client.get(f"/api/v1/{noun}").json()
    assert [r["name"] for r in listed] == names
    for resource in listed:
        assert resource["paused"] is False
        assert resource["manager"] == "specs" and resource["generation"] == 1
        assert resource["source"].startswith(str(api.spec_dir)) and resource["source"].rsplit(":", 1)[1].isdigit()
        assert resource["specErrors"] == []


def test_a_deployment_shows_its_next_runs_in_its_zone_with_words(api: LiveApi) -> None:
    hello = api.client.get("/api/v1/deployments/hello").json()
    assert (hello["pool"], hello["queue"], hello["labels"]) == ("local", "critical", {"team": "data", "tier": "1"})
    assert hello["source"] == f"{api.spec_dir / 'hello.yaml'}:1"
    [schedule] = hello["nextRuns"]
    assert schedule["description"] == "every day at 02:30 (Europe/Berlin)"
    assert schedule["times"] == [f"2030-01-0{d}T02:30:00+01:00" for d in range(2, 7)]


def test_an_inactive_schedule_is_listed_without_times(api: LiveApi) -> None:
    etl = api.client.get("/api/v1/deployments/etl-nightly").json()
    assert [(s["active"], len(s["times"])) for s in etl["nextRuns"]] == [(True, 5), (False, 0)]
    assert etl["nextRuns"][0]["times"][0] == "2030-01-01T18:00:00+00:00"


def test_pools_and_queues_name_their_pool(api: LiveApi) -> None:
    assert api.client.get("/api/v1/queues/critical").json()["pool"] == "local"
    pool = api.client.get("/api/v1/pools/local").json()
    assert (pool["pool"], pool["queue"], pool["nextRuns"]) == (None, None, [])


@pytest.mark.parametrize(("query", "names"), [
    ("label=team=data", ["hello"]),
    ("label=team=data&label=tier=1", ["hello"]),
    ("label=team=data&label=tier=2", []),
    ("label=team=ops", ["etl-nightly"]),
    ("pool=spare", ["etl-nightly"]),
    ("name=ell", ["hello"]),
    ("name=e&pool=local", ["hello"]),
])
def test_deployment_filters(api: LiveApi, query: str, names: list[str]) -> None:
    assert [d["name"] for d in api.client.get(f"/api/v1/deployments?{query}").json()] == names


def test_a_malformed_label_selector_is_a_422_naming_it(api: LiveApi) -> None:
    response = api.client.get("/api/v1/pools?label=team")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", "label"]


@pytest.mark.parametrize("path", ["/api/v1/pools/nope", "/api/v1/queues/nope", "/api/v1/deployments/nope",
                                  "/api/v1/deployments/nope/upcoming"])
def test_unknown_resources_are_404(api: LiveApi, path: str) -> None:
    response = api.client.get(path)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_spec_errors_show_on_the_resources_of_the_broken_file(api: LiveApi) -> None:
    hello_file = str(api.spec_dir / "hello.yaml")
    error = {"file": hello_file, "line": 12, "column": 5, "resource": "Deployment/hello",
             "path": "spec.schedules[0].cron", "message": "bad cron", "hint": None, "severity": "error"}
    other = {**error, "file": str(api.spec_dir / "pools.yaml"), "resource": "WorkPool/local"}
    api.store.put_status(SPEC_STATUS, {"ok": False, "checkedAt": "2030-01-01T12:00:00+00:00",
                                       "errors": [error, other]})
    assert api.client.get("/api/v1/deployments/hello").json()["specErrors"] == [error]
    assert api.client.get("/api/v1/deployments/etl-nightly").json()["specErrors"] == []
    by_name = {p["name"]: p["specErrors"] for p in api.client.get("/api/v1/pools").json()}
    assert by_name == {"local": [other], "spare": [other]}  # spare is defined in the same file


def test_upcoming_merges_the_active_schedules_in_time_order(api: LiveApi) -> None:
    body = api.client.get("/api/v1/deployments/etl-nightly/upcoming?count=3").json()
    assert body["deployment"] == "etl-nightly" and body["paused"] is False
    assert [r["time"] for r in body["runs"]] == ["2030-01-01T18:00:00+00:00", "2030-01-02T00:00:00+00:00",
                                                 "2030-01-02T06:00:00+00:00"]
    assert {r["description"] for r in body["runs"]} == {"every 6 hours"}
    berlin = api.client.get("/api/v1/deployments/hello/upcoming").json()["runs"]
    assert len(berlin) == 10 and berlin[0] == {
        "time": "2030-01-02T02:30:00+01:00", "utc": "2030-01-02T01:30:00+00:00",
        "schedule": "cron:30 2 * * *@Europe/Berlin", "description": "every day at 02:30 (Europe/Berlin)"}


@pytest.mark.parametrize("count", ["0", "1001", "x"])
def test_upcoming_count_is_bounded(api: LiveApi, count: str) -> None:
    response = api.client.get(f"/api/v1/deployments/hello/upcoming?count={count}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "count"]


# -- pause and resume -----------------------------------------------------------------


@pytest.mark.parametrize(("noun", "kind", "name"), [
    ("deployments", "Deployment", "hello"), ("pools", "WorkPool", "local"), ("queues", "WorkQueue", "critical"),
])
def test_pause_and_resume_are_runtime_state(api: LiveApi, noun: str, kind: str, name: str) -> None:
    paused = api.client.post(f"/api/v1/{noun}/{name}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert api.store.get_resource(kind, name).paused_override is True
    assert api.client.get(f"/api/v1/{noun}/{name}").json()["paused"] is True
    resumed = api.client.post(f"/api/v1/{noun}/{name}/resume")
    assert resumed.json()["paused"] is False
    assert api.store.get_resource(kind, name).paused_override is None  # back to what the spec says


def test_pausing_something_unknown_is_404(api: LiveApi) -> None:
    assert api.client.post("/api/v1/deployments/nope/pause").status_code == 404


# -- plan -----------------------------------------------------------------------------


def test_plan_of_applied_specs_has_no_changes(api: LiveApi) -> None:
    assert api.client.get("/api/v1/plan").json() == {
        "valid": True, "changes": [], "summary": {"create": 0, "update": 0, "delete": 0}, "notes": [], "errors": [],
        "apiManaged": []}


def test_plan_shows_an_edit_field_by_field_without_applying_it(api: LiveApi) -> None:
    path = api.spec_dir / "etl.yaml"
    path.write_text(path.read_text().replace("interval: 6h", "interval: 2h"))
    plan = api.client.get("/api/v1/plan").json()
    assert plan["valid"] is True and plan["summary"] == {"create": 0, "update": 1, "delete": 0}
    [change] = plan["changes"]
    assert (change["action"], change["kind"], change["name"]) == ("update", "Deployment", "etl-nightly")
    assert {"op": "replace", "path": "/spec/schedules/0/interval", "from": "6h", "to": "2h"} in change["diff"]
    assert api.store.get_resource("Deployment", "etl-nightly").spec["schedules"][0]["interval"] == "6h"


def test_plan_of_broken_specs_is_200_with_the_errors(api: LiveApi) -> None:
    (api.spec_dir / "broken.yaml").write_text("apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {name: x}\n"
                                              "spec: {pool: nowhere, command: [a]}\n")
    response = api.client.get("/api/v1/plan")
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False and body["changes"] == []
    assert any(e["resource"] == "Deployment/x" and e["file"].endswith("broken.yaml") for e in body["errors"])


def test_plan_without_spec_paths_is_404(api_factory: Any) -> None:
    api = api_factory(spec_paths=())
    assert api.client.get("/api/v1/plan").status_code == 404


# -- runs: create ---------------------------------------------------------------------


def test_create_a_run_with_parameters(api: LiveApi) -> None:
    response = api.client.post("/api/v1/deployments/hello/runs", json={"parameters": {"who": "you"}})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/runs/{body['id']}"
    stored = api.store.get_run(body["id"])
    assert body == run_json(stored)
    assert (stored.state, stored.trigger, stored.parameters) == ("Scheduled", "api", {"who": "you", "times": 1})
    assert stored.scheduled_time == datetime.fromisoformat("2030-01-01T12:00:00+00:00")


def test_a_run_without_a_body_takes_the_defaults(api: LiveApi) -> None:
    response = api.client.post("/api/v1/deployments/hello/runs")
    assert response.status_code == 201
    assert api.store.get_run(response.json()["id"]).parameters == {"who": "world", "times": 1}


def test_create_a_run_with_job_variables(api: LiveApi) -> None:
    body = api.create_run(jobVariables={"env": {"LOG_LEVEL": "debug"}})
    assert api.store.get_run(body["id"]).job_variables == {"env": {"LOG_LEVEL": "debug"}}


@pytest.mark.parametrize(("body", "loc"), [
    ({"parameters": {"times": 0}}, ["body", "parameters", "times"]),
    ({"parameters": {"who": 3}}, ["body", "parameters", "who"]),
    ({"parameters": {"who": None}}, ["body", "parameters", "who"]),
    ({"jobVariables": {"nope": 1}}, ["body", "jobVariables", "nope"]),
    ({"jobVariables": {"env": {"X": 1}}}, ["body", "jobVariables", "env", "X"]),
    ({"parameters": []}, ["body", "parameters"]),
    ({"params": {}}, ["body", "params"]),
])
def test_invalid_input_is_a_422_that_names_the_field(api: LiveApi, body: dict[str, Any], loc: list[Any]) -> None:
    response = api.client.post("/api/v1/deployments/hello/runs", json=body)
    assert response.status_code == 422, response.text
    assert [d["loc"] for d in response.json()["detail"]] == [loc]
    assert api.store.list_runs() == []


def test_a_missing_required_parameter_is_named(api: LiveApi) -> None:
    (api.spec_dir / "needy.yaml").write_text(
        "apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {name: needy}\nspec:\n  pool: local\n"
        "  command: [echo, '{{ parameters.who }}']\n"
        "  parameterSchema: {type: object, properties: {who: {type: string}}, required: [who]}\n")
    apply_specs(api.store, api.spec_dir)
    detail = api.client.post("/api/v1/deployments/needy/runs", json={}).json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "parameters", "who"]] and "who" in detail[0]["msg"]


def test_a_run_of_an_unknown_deployment_is_404(api: LiveApi) -> None:
    assert api.client.post("/api/v1/deployments/nope/runs", json={}).status_code == 404


# -- runs: list, get, cancel ------------------------------------------------------------


def _all_pages(api: LiveApi, query: str, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    for _ in range(100):  # bounded: far more pages than any test makes
        suffix = f"&cursor={cursor}" if cursor else ""
        body = api.client.get(f"/api/v1/runs?limit={limit}&{query}{suffix}").json()
        pages.append([r["id"] for r in body["runs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("paging did not end")


def test_runs_page_newest_first_with_cursors(api: LiveApi) -> None:
    created = [api.create_run()["id"] for _ in range(7)]
    pages = _all_pages(api, "", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == created[::-1]
    assert _all_pages(api, "", limit=7) == [created[::-1]]  # an exact fit has no empty last page


def test_runs_filters(api: LiveApi) -> None:
    hello = [api.create_run()["id"] for _ in range(3)]
    etl = api.create_run("etl-nightly")["id"]
    api.store.transition(hello[0], PENDING, "claimed")
    api.store.transition(hello[0], RUNNING, "started")
    api.store.transition(hello[1], CANCELLED, "cancelled")

    def ids(query: str) -> set[str]:
        return {r["id"] for r in api.client.get(f"/api/v1/runs?{query}").json()["runs"]}

    assert ids("deployment=etl-nightly") == {etl}
    assert ids("pool=local") == set(hello)
    assert ids("state=Running") == {hello[0]}
    assert ids("state=Running&state=Cancelled") == {hello[0], hello[1]}
    assert ids("state=Scheduled&deployment=hello") == {hello[2]}
    assert ids("since=2030-01-01T12:00:00Z&until=2030-01-01T12:00:01Z") == {*hello, etl}
    assert ids("since=2030-01-01T12:00:01") == set()  # no zone: UTC
    assert ids("until=2030-01-01T13:00:00%2B01:00") == set()


@pytest.mark.parametrize(("query", "name"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("state=Bogus", "state"), ("since=yesterday", "since"),
    ("cursor=!!!", "cursor"), ("cursor=bm90LWEtY3Vyc29y", "cursor"),
])
def test_bad_run_queries_are_422_naming_the_parameter(api: LiveApi, query: str, name: str) -> None:
    response = api.client.get(f"/api/v1/runs?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", name]


def test_get_a_run_with_its_events_by_id_or_prefix(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    api.store.transition(run_id, CANCELLED, "changed my mind")
    for key in (run_id, run_id[:8]):
        body = api.client.get(f"/api/v1/runs/{key}").json()
        assert body["id"] == run_id and body["job"] is None and body["variablesPatch"] is None
        assert [(e["from"], e["to"], e["reason"]) for e in body["events"]] == [
            (None, "Scheduled", "started by api request"), ("Scheduled", "Cancelled", "changed my mind")]


@pytest.mark.parametrize("run_id", ["0123456789abcdef", "abc", "not-hex"])
def test_unknown_runs_are_404(api: LiveApi, run_id: str) -> None:
    for response in (api.client.get(f"/api/v1/runs/{run_id}"), api.client.post(f"/api/v1/runs/{run_id}/cancel"),
                     api.client.get(f"/api/v1/runs/{run_id}/logs")):
        assert response.status_code == 404


def test_cancel_a_scheduled_run_then_409(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    response = api.client.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "Cancelled"
    assert api.store.get_run(run_id).state == "Cancelled"
    again = api.client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "Cancelled" in again.json()["detail"]


def test_cancel_a_running_run_asks_the_worker(api: LiveApi) -> None:
    run_id = api.create_run()["id"]
    api.store.transition(run_id, PENDING, "claimed")
    api.store.transition(run_id, RUNNING, "started", start_time=api.settings.clock() + timedelta(seconds=1))
    assert api.client.post(f"/api/v1/runs/{run_id}/cancel").json()["state"] == "Cancelling"


def test_health_and_placeholder(api: LiveApi) -> None:
    assert api.anonymous().get("/api/v1/health").json()["status"] == "ok"
    page = api.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
