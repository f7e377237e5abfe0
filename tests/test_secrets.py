"""Secrets, as pure functions: what is marked secret, how a job is rendered with them, and every
place a value could be shown (validation messages, plan diffs, JSON shapes) hides them.

The end-to-end canary tests (a real daemon, the API and the CLI) are in test_secrets_e2e.py.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
from rich.text import Text

from orchestra.api.shapes import resource_json, run_json
from orchestra.jobs import check_template, default_template, render_errors, render_job
from orchestra.jobs.secrets import ANY, SENSITIVE, SecretMarks, masked, secret_paths
from orchestra.planning.diff import FieldChange, hide_plan_secrets
from orchestra.planning.plan import Change, Plan
from orchestra.planning.render import render_plan
from orchestra.specs.parameters import validate_parameters
from tests.conftest import CliResult

CANARY = "canary-" + secrets.token_hex(8)
SCHEMA = {"type": "object", "properties": {
    "password": {"type": "string", "format": "password", "pattern": "^[a-z0-9-]+$"},
    "pin": {"type": "integer", "writeOnly": True},
    "region": {"type": "string"},
}}


def deployment(**spec: Any) -> dict[str, Any]:
    spec.setdefault("command", ["report", "--password={{ parameters.password }}", "{{ parameters.pin }}"])
    spec.setdefault("parameterSchema", SCHEMA)
    return {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "report"},
            "spec": {"pool": "p", **spec}}


def text_of(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- marking -------------------------------------------------------------------------------------------------


def test_write_only_and_password_format_mark_paths_through_maps_lists_and_refs() -> None:
    schema = {"type": "object", "$defs": {"Creds": {"properties": {"key": {"type": "string", "writeOnly": True}}}},
              "properties": {
                  "password": {"type": "string", "format": "password"},
                  "env": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": True}},
                  "tokens": {"type": "array", "items": {"format": "password"}},
                  "creds": {"$ref": "#/$defs/Creds"},
                  "region": {"type": "string"},
              }}
    assert set(secret_paths(schema)) == {("password",), ("env", ANY), ("tokens", ANY), ("creds", "key")}


def test_masking_keeps_references_and_the_shape_of_secret_objects() -> None:
    value = {"password": "x", "env": {"A": "1", "B": {"secretRef": {"env": "B"}}}, "region": "eu"}
    shown = masked(value, (("password",), ("env", ANY)))
    assert shown == {"password": "***", "env": {"A": "***", "B": {"secretRef": {"env": "B"}}}, "region": "eu"}
    assert masked(value, (("env", ANY),), refs_as_labels=True)["env"]["B"] == "<secret:env:B>"


# --- rendering --------------------------------------------------------------------------------------------------


def test_a_secret_parameter_is_masked_in_the_stored_job_and_real_in_the_runnable_one() -> None:
    value = CANARY + ' "quoted" \\ back'
    rendered = render_job(default_template("process"), deployment(),
                          parameters={"password": value, "pin": 4711, "region": "eu"})
    assert CANARY not in text_of(rendered.job) and "4711" not in text_of(rendered.job)
    assert rendered.job["command"] == ["report", "--password=***", "***"]
    assert rendered.job["env"]["ORCHESTRA_PARAM_PASSWORD"] == "***"
    assert json.loads(rendered.job["env"]["ORCHESTRA_PARAMETERS"]) == {"password": "***", "pin": "***", "region": "eu"}
    job = rendered.runnable()
    assert job["command"] == ["report", f"--password={value}", "4711"]
    assert job["env"]["ORCHESTRA_PARAM_PASSWORD"] == value
    assert json.loads(job["env"]["ORCHESTRA_PARAMETERS"]) == {"password": value, "pin": 4711, "region": "eu"}


def test_a_secret_inside_json_inside_a_longer_string_is_escaped_exactly() -> None:
    template = {"variables": {"type": "object", "properties": {}},
                "jobConfiguration": {"command": "{{ command }}", "env": {}, "note": "run {{ command }} now",
                                     "params": "{{ parameters }}"}}
    value = 'a"b\\c\nd'
    rendered = render_job(template, deployment(), parameters={"password": value, "pin": 1})
    job = rendered.runnable()
    assert json.loads(job["note"][len("run "):-len(" now")]) == ["report", f"--password={value}", "1"]
    assert job["params"] == {"password": value, "pin": 1}
    assert rendered.job["params"] == {"password": "***", "pin": "***"}


def test_a_value_that_merely_looks_like_a_token_is_left_alone() -> None:
    fake = "@@secret-0123456789abcdef-0-0-w0@@"
    rendered = render_job(default_template("process"), deployment(command=["run", "{{ parameters.region }}"]),
                          parameters={"password": CANARY, "region": fake})
    assert rendered.job["command"] == rendered.runnable()["command"] == ["run", fake]
    assert json.loads(rendered.runnable()["env"]["ORCHESTRA_PARAMETERS"])["region"] == fake


def test_a_secret_ref_shows_its_label_and_resolves_from_the_workers_environment(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(CANARY + "-file\n")
    dep = deployment(command=["run"], jobVariables={"env": {
        "TOKEN": {"secretRef": {"env": "MY_TOKEN"}}, "KEY": {"secretRef": {"file": str(tmp_path / "key")}}}})
    rendered = render_job(default_template("process"), dep)
    assert rendered.job["env"]["TOKEN"] == "<secret:env:MY_TOKEN>"
    assert rendered.variables["env"]["KEY"] == f"<secret:file:{tmp_path / 'key'}>"
    assert {"op": "add", "path": "/env/TOKEN", "value": "<secret:env:MY_TOKEN>"} in rendered.variables_patch
    with pytest.raises(LookupError):
        rendered.runnable()  # never launched with a reference unresolved
    assert rendered.resolve_secret_refs({"MY_TOKEN": CANARY}, lambda p: Path(p).read_text()) == []
    assert rendered.runnable()["env"]["TOKEN"] == CANARY
    assert rendered.runnable()["env"]["KEY"] == CANARY + "-file"  # one trailing newline dropped
    assert CANARY not in text_of([rendered.job, rendered.variables, rendered.variables_patch])


def test_an_unresolvable_ref_names_the_reference_and_where_it_is_used() -> None:
    dep = deployment(command=["run"], parameters={"password": {"secretRef": {"env": "NOT_SET"}}})
    rendered = render_job(default_template("process"), dep)
    missing = {"secretRef": {"file": "/nonexistent/secret"}}
    other = render_job(default_template("process"), deployment(command=["run"], jobVariables={"env": {"K": missing}}))
    [problem] = rendered.resolve_secret_refs({}, lambda p: Path(p).read_text())
    assert problem.path == ("parameters", "password")
    assert "<secret:env:NOT_SET>" in problem.message and "not set on this worker" in problem.message
    [problem] = other.resolve_secret_refs({}, lambda p: Path(p).read_text())
    assert problem.path == ("jobVariables", "env", "K") and "/nonexistent/secret" in problem.message


def test_a_secret_pool_default_is_masked_and_a_default_may_be_a_ref() -> None:
    template = default_template("process")
    template["variables"]["properties"]["env"] = {
        "type": "object", "additionalProperties": {"type": "string"},
        "properties": {"API_KEY": {"type": "string", "writeOnly": True}, "DB": {"type": "string", "writeOnly": True}},
        "default": {"API_KEY": CANARY, "DB": {"secretRef": {"env": "DB_PASSWORD"}}}}
    assert check_template(template) == []
    rendered = render_job(template, deployment(command=["run"]))
    assert rendered.job["env"]["API_KEY"] == "***" and rendered.job["env"]["DB"] == "<secret:env:DB_PASSWORD>"
    rendered.resolve_secret_refs({"DB_PASSWORD": "db"}, lambda p: "")
    assert rendered.runnable()["env"]["API_KEY"] == CANARY and rendered.runnable()["env"]["DB"] == "db"


# --- validation messages ----------------------------------------------------------------------------------------


def test_a_validation_error_on_a_secret_field_does_not_quote_the_value() -> None:
    errors = validate_parameters(SCHEMA, {"password": CANARY.upper(), "pin": CANARY})
    assert [e.path for e in errors] == [("password",), ("pin",)]
    assert CANARY not in str(errors) and CANARY.upper() not in str(errors)
    assert "secret value (not shown)" in errors[0].message


def test_a_message_about_a_parent_object_hides_the_secret_inside_it() -> None:
    schema = {"type": "object", "anyOf": [{"required": ["other"]}],
              "properties": {"password": SCHEMA["properties"]["password"]}}
    [error] = validate_parameters(schema, {"password": CANARY})
    assert CANARY not in error.message and "***" in error.message


def test_refs_are_checked_for_shape_and_type_but_not_for_constraints_of_their_unknown_value() -> None:
    assert validate_parameters(SCHEMA, {"password": {"secretRef": {"env": "PW"}}}) == []  # pattern not judged
    [error] = validate_parameters(SCHEMA, {"pin": {"secretRef": {"env": "PIN"}}})
    assert error.message == "<secret:env:PIN> gives a string, but this field must be of type 'integer'"
    [error] = validate_parameters(SCHEMA, {"password": {"secretRef": {"file": "relative.txt"}}})
    assert error.path == ("password", "secretRef") and "absolute path" in error.message
    [error] = validate_parameters(SCHEMA, {"password": {"secretRef": {"env": "A", "file": "/b"}}})
    assert "exactly one of" in error.message


def test_a_job_variable_error_on_a_secret_does_not_quote_it() -> None:
    template = default_template("process")
    template["variables"]["properties"]["apiKey"] = {"type": "string", "writeOnly": True, "minLength": 64}
    errors = render_errors(template, deployment(command=["run"], jobVariables={"apiKey": CANARY}))
    assert [e.path for e in errors] == [("spec", "jobVariables", "apiKey")]
    assert CANARY not in errors[0].message and "minLength" in errors[0].message


# --- plan and JSON shapes ---------------------------------------------------------------------------------------


def test_plan_shows_sensitive_values_for_both_old_and_new() -> None:
    spec_old = {"pool": "p", "parameterSchema": SCHEMA, "parameters": {"password": "old-" + CANARY, "region": "eu"}}
    spec_new = {**spec_old, "parameters": {"password": "new-" + CANARY, "region": "us"}}
    stored = _Stored("Deployment", "report", spec_old)
    desired = _Stored("Deployment", "report", spec_new)
    change = Change("update", "Deployment", "report", "specs/report.yaml:1", [
        FieldChange("replace", "/spec/parameters/password", "old-" + CANARY, "new-" + CANARY),
        FieldChange("replace", "/spec/parameters/region", "eu", "us")])
    created = Change("create", "Deployment", "report", None, [FieldChange("add", "/spec/parameters", None,
                                                                          spec_new["parameters"])])
    [update] = hide_plan_secrets([change], [desired], [stored])
    [create] = hide_plan_secrets([created], [desired], [])
    assert update.diff[0].to_json() == {"op": "replace", "path": "/spec/parameters/password",
                                        "from": SENSITIVE, "to": SENSITIVE}
    assert update.diff[1].new == "us"
    assert create.diff[0].new == {"password": SENSITIVE, "region": "us"}
    text = Text.from_markup(render_plan(Plan([update], [], 0, []))).plain
    assert "~ /spec/parameters/password: (sensitive value) -> (sensitive value)" in text and CANARY not in text


def test_resource_json_hides_secret_defaults_of_pools_and_deployments() -> None:
    pool_spec = {"type": "process", "baseJobTemplate": {"jobConfiguration": {"env": "{{ env }}"}, "variables": {
        "type": "object", "properties": {"env": {"type": "object", "default": {"API_KEY": CANARY},
                                                 "properties": {"API_KEY": {"type": "string", "writeOnly": True}}},
                                         "apiKey": {"type": "string", "format": "password", "default": CANARY}}}}}
    dep_spec = {"pool": "p", "command": ["x"], "parameters": {"password": CANARY},
                "parameterSchema": {**SCHEMA, "properties": {**SCHEMA["properties"], "pin": {
                    "type": "integer", "writeOnly": True, "default": 1234}}},
                "schedules": [{"interval": "1h", "parameters": {"password": CANARY}}]}
    pool = resource_json(_Stored("WorkPool", "p", pool_spec))
    dep = resource_json(_Stored("Deployment", "d", dep_spec))
    assert CANARY not in text_of([pool, dep]) and "1234" not in text_of(dep)
    assert pool["spec"]["baseJobTemplate"]["variables"]["properties"]["env"]["default"] == {"API_KEY": "***"}
    assert dep["spec"]["parameters"] == {"password": "***"}


def test_run_json_hides_what_the_marks_say_and_keeps_references() -> None:
    run = _run(parameters={"password": CANARY, "region": "eu", "pin": {"secretRef": {"env": "PIN"}}},
               job_variables={"env": {"API_KEY": CANARY}})
    shown = run_json(run, SecretMarks(secret_paths(SCHEMA), (("env", ANY),)))
    assert shown["parameters"] == {"password": "***", "region": "eu", "pin": {"secretRef": {"env": "PIN"}}}
    assert shown["jobVariables"] == {"env": {"API_KEY": "***"}}


class _Stored:
    """A stored resource as the shapes and the planner read it."""

    def __init__(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.kind, self.name, self.spec = kind, name, spec
        self.metadata: dict[str, Any] = {"name": name}
        self.paused = False
        self.source_file, self.source_line = None, None
        self.manager, self.generation = "specs", 1


def _run(**fields: Any) -> Any:
    from orchestra.store import Run

    now = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, Any] = {name: None for name in Run.__dataclass_fields__}
    values.update(id="r1", deployment="d", pool="p", queue="default", trigger="manual", state="Scheduled",
                  state_reason="", attempt=1, max_attempts=1, retry_delay_seconds=0.0, parameters={},
                  job_variables={}, scheduled_time=now, created_at=now)
    values.update(fields)
    return Run(**values)


def test_an_entrypoint_parameter_annotated_secretstr_is_marked_secret(tmp_path: Path) -> None:
    from orchestra.jobs import parameter_schema_from_entrypoint

    (tmp_path / "flow.py").write_text("import pydantic\n\ndef main(token: pydantic.SecretStr, region: str = 'eu'):\n"
                                      "    pass\n")
    schema = parameter_schema_from_entrypoint("flow.py:main", tmp_path)
    assert secret_paths(schema) == (("token",),)


def test_a_reference_replaces_a_default_whole_and_is_never_merged_key_by_key() -> None:
    from orchestra.jobs import deep_merge

    default = {"env": {"KEY": {"secretRef": {"env": "A"}}, "B": "1"}}
    assert deep_merge(default, {"env": {"KEY": {"secretRef": {"file": "/k"}}}}) == {
        "env": {"KEY": {"secretRef": {"file": "/k"}}, "B": "1"}}
    assert deep_merge(default, {"env": {"KEY": {"x": None, "y": "2"}}})["env"]["KEY"] == {"y": "2"}


# --- through a live API: an API-managed deployment with a secret default ---------------------------------------


VAULTED_POOL = """
apiVersion: orchestra/v1
kind: WorkPool
metadata: {name: vaulted}
spec:
  type: process
  baseJobTemplate:
    variables:
      type: object
      properties:
        env:
          type: object
          additionalProperties: {type: string}
          properties: {API_KEY: {type: string, writeOnly: true}}
          default: {}
    jobConfiguration: {command: "{{ command }}", env: "{{ env }}"}
"""


def test_an_api_managed_deployment_shows_and_exports_its_secrets_masked(
        tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    from tests.api_fixtures import start_api, stop_api

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "vaulted.yaml").write_text(VAULTED_POOL)
    live = start_api(tmp_path)
    try:
        document = {"metadata": {"name": "vault"}, "spec": {
            "pool": "vaulted", "command": ["true"], "parameterSchema": SCHEMA, "parameters": {"password": CANARY},
            "jobVariables": {"env": {"API_KEY": CANARY + "-key", "LEVEL": "debug"}}}}
        created = live.client.post("/api/v1/deployments", json=document)
        assert created.status_code == 201, created.text
        bad = live.client.post("/api/v1/deployments", json={**document, "metadata": {"name": "bad"}, "spec": {
            **document["spec"], "parameters": {"password": CANARY.upper()}}})
        run = live.client.post("/api/v1/deployments/vault/runs", json={"parameters": {"pin": 4711}})
        shown = [created.text, bad.text, run.text, live.client.get("/api/v1/deployments/vault").text,
                 live.client.get("/api/v1/deployments").text, live.client.get("/api/v1/export").text,
                 live.client.get(f"/api/v1/runs/{run.json()['id']}").text, live.client.get("/api/v1/runs").text]
        shown += [cli("--db", f"sqlite:///{tmp_path / 'orchestra.db'}", "get", *args).out
                  for args in (["deployments", "-o", "json"], ["deployment", "vault", "-o", "yaml"])]
        assert bad.status_code == 422 and run.status_code == 201
        assert created.json()["spec"]["parameters"] == {"password": "***"}
        assert created.json()["spec"]["jobVariables"] == {"env": {"API_KEY": "***", "LEVEL": "debug"}}
        assert run.json()["parameters"] == {"password": "***", "pin": "***"}
        leaked = [text for text in shown if CANARY in text or CANARY.upper() in text or "4711" in text]
        assert leaked == [] and all(shown)
        assert live.store.get_resource("Deployment", "vault").spec["parameters"] == {"password": CANARY}
    finally:
        stop_api(live)
