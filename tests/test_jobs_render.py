"""render_job end to end: merge order, schema errors at the right field, jobPatches, and the job's env."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestra.errors import FieldError
from orchestra.jobs import RenderedJob, default_template, render_errors, render_job


def deployment(**spec: Any) -> dict[str, Any]:
    spec.setdefault("command", ["run"])
    return {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "nightly-report"},
            "spec": {"pool": "p", **spec}}


def docker(**kwargs: Any) -> RenderedJob:
    spec = kwargs.pop("spec", {})
    return render_job(default_template("docker"), deployment(**spec), **kwargs)


def errors_of(pool_type: str = "docker", **kwargs: Any) -> list[tuple[tuple[Any, ...], str]]:
    spec = kwargs.pop("spec", {})
    return [(e.path, e.message) for e in render_errors(default_template(pool_type), deployment(**spec), **kwargs)]


# --- merge order and the recorded patch -----------------------------------------------------------------------


def test_run_variables_override_deployment_variables_which_override_defaults() -> None:
    rendered = docker(spec={"jobVariables": {"image": "etl:1", "env": {"A": "dep", "B": "dep"}, "volumes": ["/a:/a"]}},
                      job_variables={"env": {"B": "run"}, "volumes": ["/b:/b"], "network": "backend"})
    job = rendered.job
    assert job["image"] == "etl:1"
    assert {k: v for k, v in job["env"].items() if not k.startswith("ORCHESTRA_")} == {"A": "dep", "B": "run"}
    assert job["volumes"] == ["/b:/b"]
    assert job["network"] == "backend"
    assert rendered.variables["env"] == {"A": "dep", "B": "run"}  # variables hold no ORCHESTRA_ values


def test_variables_patch_records_every_override_against_the_defaults() -> None:
    rendered = docker(spec={"jobVariables": {"image": "etl:1", "env": {"A": "1"}, "network": None}},
                      job_variables={"cpus": 2})
    assert sorted(rendered.variables_patch, key=lambda op: op["path"]) == [
        {"op": "replace", "path": "/cpus", "value": 2},
        {"op": "add", "path": "/env/A", "value": "1"},
        {"op": "replace", "path": "/image", "value": "etl:1"},
        {"op": "remove", "path": "/network"},
    ]
    assert "network" not in rendered.job


def test_inputs_are_not_changed() -> None:
    template = default_template("docker")
    dep = deployment(jobVariables={"env": {"A": "1"}}, jobPatches=[{"op": "add", "path": "/env/B", "value": "2"}])
    run_vars = {"env": {"C": "3"}}
    before = json.dumps([template, dep, run_vars])
    render_job(template, dep, job_variables=run_vars)
    assert json.dumps([template, dep, run_vars]) == before


def test_parameters_argument_wins_over_spec_parameters() -> None:
    rendered = docker(spec={"parameters": {"region": "eu"}, "command": ["r", "{{ parameters.region }}"]},
                      parameters={"region": "us", "full": True})
    assert rendered.job["command"] == ["r", "us"]
    assert json.loads(rendered.job["env"]["ORCHESTRA_PARAMETERS"]) == {"region": "us", "full": True}


# --- schema violations, blamed on who wrote them ------------------------------------------------------------------


VIOLATIONS = [
    ("deployment env value", {"jobVariables": {"env": {"X": 5}}}, None,
     ("spec", "jobVariables", "env", "X"), "5 is not of type 'string'"),
    ("run env value", {}, {"env": {"X": 5}},
     ("jobVariables", "env", "X"), "(from the run's job variables)"),
    ("run replaces the deployment's value", {"jobVariables": {"memory": "1g"}}, {"memory": "lots"},
     ("jobVariables", "memory"), "not in the expected form"),
    ("deployment key under a run's sibling key", {"jobVariables": {"env": {"X": 5}}}, {"env": {"Y": "ok"}},
     ("spec", "jobVariables", "env", "X"), "not of type"),
    ("unknown variable", {"jobVariables": {"imagee": "x"}}, None,
     ("spec", "jobVariables", "imagee"), "unknown job variable 'imagee'; did you mean 'image'?"),
    ("unknown variable from the run", {}, {"netwrk": "x"},
     ("jobVariables", "netwrk"), "did you mean 'network'?"),
    ("enum", {"jobVariables": {"pullPolicy": "sometimes"}}, None,
     ("spec", "jobVariables", "pullPolicy"), "is not one of ['never', 'if-missing', 'always']"),
    ("list item", {"jobVariables": {"volumes": ["/ok:/ok", "bad"]}}, None,
     ("spec", "jobVariables", "volumes", 1), "host-path-or-volume:/container/path"),
    ("wrong type of a whole object", {"jobVariables": {"env": ["A=1"]}}, None,
     ("spec", "jobVariables", "env"), "is not of type 'object'"),
]


@pytest.mark.parametrize(("spec", "run", "path", "message"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_schema_violations_point_at_the_field(spec: dict[str, Any], run: dict[str, Any] | None,
                                              path: tuple[Any, ...], message: str) -> None:
    errors = errors_of(spec=spec, job_variables=run)
    assert [p for p, _ in errors] == [path]
    assert message in errors[0][1]


def test_all_schema_violations_are_reported_at_once() -> None:
    errors = errors_of(spec={"jobVariables": {"env": {"A": 1, "B": 2}, "cpus": "many", "privileged": "no"}})
    assert [p for p, _ in errors] == [("spec", "jobVariables", "cpus"), ("spec", "jobVariables", "env", "A"),
                                      ("spec", "jobVariables", "env", "B"), ("spec", "jobVariables", "privileged")]


def test_a_required_variable_removed_with_null_is_blamed_on_the_null() -> None:
    template = {"variables": {"type": "object", "required": ["image"],
                              "properties": {"image": {"type": "string", "default": "a"}}},
                "jobConfiguration": {"image": "{{ image }}"}}
    errors = render_errors(template, deployment(jobVariables={"image": None}))
    assert [(e.path, e.message) for e in errors] == [(("spec", "jobVariables", "image"),
                                                       "required job variable 'image' is missing")]
    errors = render_errors(template, deployment(), job_variables={"image": None})
    assert errors[0].path == ("jobVariables", "image")


def test_a_required_variable_nobody_set() -> None:
    template = {"variables": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}},
                "jobConfiguration": {"image": "{{ image }}"}}
    errors = render_errors(template, deployment())
    assert [(e.path, e.message) for e in errors] == [(("spec", "jobVariables"), "required job variable 'image' is missing")]


# --- jobPatches -----------------------------------------------------------------------------------------------------


PATCHES = [
    ("add to a list", [{"op": "add", "path": "/volumes/-", "value": "/data:/data:ro"}], "volumes", ["/data:/data:ro"]),
    ("add a key", [{"op": "add", "path": "/labels/team", "value": "data"}], "labels", {"team": "data"}),
    ("add a new top-level key", [{"op": "add", "path": "/shmSize", "value": "1g"}], "shmSize", "1g"),
    ("replace", [{"op": "replace", "path": "/image", "value": "etl:2"}], "image", "etl:2"),
    ("remove", [{"op": "remove", "path": "/entrypoint"}], "entrypoint", KeyError),
    ("in order", [{"op": "add", "path": "/labels/a", "value": "1"}, {"op": "move", "from": "/labels/a",
                                                                     "path": "/labels/b"}], "labels", {"b": "1"}),
    ("test passes", [{"op": "test", "path": "/privileged", "value": False}], "privileged", False),
    ("patch the command", [{"op": "add", "path": "/command/0", "value": "nice"}], "command", ["nice", "run"]),
]


@pytest.mark.parametrize(("patches", "key", "expected"), [p[1:] for p in PATCHES], ids=[p[0] for p in PATCHES])
def test_job_patches_apply_to_the_rendered_job(patches: list[dict[str, Any]], key: str, expected: Any) -> None:
    job = docker(spec={"jobPatches": patches}).job
    if expected is KeyError:
        assert key not in job
    else:
        assert job[key] == expected


FAILING_PATCHES = [
    ("missing parent", [{"op": "add", "path": "/resources/limits", "value": 1}], 0,
     "cannot add path '/resources/limits': the rendered job has no key 'resources'"),
    ("replace a missing key", [{"op": "replace", "path": "/labels/team", "value": "x"}], 0,
     "'/labels' has no key 'team' (it has: nothing)"),
    ("remove a missing key", [{"op": "remove", "path": "/shmSize"}], 0, "no key 'shmSize'"),
    ("index past the end", [{"op": "add", "path": "/volumes/3", "value": "x"}], 0, "use '-' to append"),
    ("into a scalar", [{"op": "add", "path": "/image/tag", "value": "x"}], 0, "'/image' is a str"),
    ("second one fails", [{"op": "add", "path": "/labels/a", "value": "1"},
                          {"op": "remove", "path": "/labels/b"}], 1, "no key 'b'"),
    ("test fails", [{"op": "test", "path": "/image", "value": "other"}], 0,
     "test failed: '/image' is 'python:3.12-slim', not 'other'"),
    ("move from nowhere", [{"op": "move", "from": "/nope", "path": "/x"}], 0, "cannot move from '/nope'"),
    ("pointer without slash", [{"op": "add", "path": "image", "value": "x"}], 0, "must start with /"),
    ("unknown op", [{"op": "merge", "path": "/image", "value": "x"}], 0, "Unknown operation"),
    ("not an object", ["add /x"], 0, "must be an object"),
]


@pytest.mark.parametrize(("patches", "index", "message"), [p[1:] for p in FAILING_PATCHES],
                         ids=[p[0] for p in FAILING_PATCHES])
def test_a_patch_that_cannot_apply_says_why(patches: list[Any], index: int, message: str) -> None:
    errors = errors_of(spec={"jobPatches": patches})
    assert [p for p, _ in errors] == [("spec", "jobPatches", index)]
    assert message in errors[0][1]


# --- the environment a job gets -----------------------------------------------------------------------------------


def test_env_injection() -> None:
    params = {"who": "world", "my-param": [1, 2], "2x": None, "n": 5, "s": "a b", "cfg": {"k": "v"}}
    env = docker(spec={"jobVariables": {"env": {"USER_VAR": "u"}}}, parameters=params, run_id="r-9",
                 scheduled_time="2024-01-01T02:30:00+01:00").job["env"]
    assert env == {
        "USER_VAR": "u",
        "ORCHESTRA_RUN_ID": "r-9",
        "ORCHESTRA_DEPLOYMENT": "nightly-report",
        "ORCHESTRA_SCHEDULED_TIME": "2024-01-01T02:30:00+01:00",
        "ORCHESTRA_PARAMETERS": '{"who":"world","my-param":[1,2],"2x":null,"n":5,"s":"a b","cfg":{"k":"v"}}',
        "ORCHESTRA_PARAM_WHO": "world",
        "ORCHESTRA_PARAM_MY_PARAM": "[1,2]",
        "ORCHESTRA_PARAM_2X": "null",
        "ORCHESTRA_PARAM_N": "5",
        "ORCHESTRA_PARAM_S": "a b",
        "ORCHESTRA_PARAM_CFG": '{"k":"v"}',
    }


def test_no_scheduled_time_no_variable() -> None:
    assert "ORCHESTRA_SCHEDULED_TIME" not in docker().job["env"]


def test_a_job_without_env_gets_none() -> None:
    template = {"variables": {"type": "object", "properties": {}}, "jobConfiguration": {"command": "{{ command }}"}}
    assert render_job(template, deployment()).job == {"command": ["run"]}
    assert "env" not in docker(spec={"jobPatches": [{"op": "remove", "path": "/env"}]}).job


def test_env_added_by_a_patch_gets_orchestra_variables_too() -> None:
    template = {"variables": {"type": "object", "properties": {}}, "jobConfiguration": {"command": "{{ command }}"}}
    job = render_job(template, deployment(jobPatches=[{"op": "add", "path": "/env", "value": {"A": "1"}}])).job
    assert job["env"]["A"] == "1" and job["env"]["ORCHESTRA_DEPLOYMENT"] == "nightly-report"


RESERVED = [
    ("deployment", {"jobVariables": {"env": {"ORCHESTRA_RUN_ID": "mine"}}}, None,
     ("spec", "jobVariables", "env", "ORCHESTRA_RUN_ID")),
    ("run", {}, {"env": {"ORCHESTRA_X": "1"}}, ("jobVariables", "env", "ORCHESTRA_X")),
    ("patch", {"jobPatches": [{"op": "add", "path": "/env/ORCHESTRA_PARAM_WHO", "value": "x"}]}, None,
     ("spec", "jobPatches", 0)),
]


@pytest.mark.parametrize(("spec", "run", "path"), [r[1:] for r in RESERVED], ids=[r[0] for r in RESERVED])
def test_orchestra_env_names_are_reserved(spec: dict[str, Any], run: dict[str, Any] | None,
                                          path: tuple[Any, ...]) -> None:
    errors = errors_of(spec=spec, job_variables=run)
    assert [p for p, _ in errors] == [path]
    assert "is reserved" in errors[0][1]


def test_reserved_name_in_the_pool_default() -> None:
    template = default_template("process")
    template["variables"]["properties"]["env"]["default"] = {"ORCHESTRA_API_URL": "http://x"}
    errors = render_errors(template, deployment())
    assert [e.path for e in errors] == [("baseJobTemplate", "variables", "properties", "env", "default",
                                         "ORCHESTRA_API_URL")]


def test_non_string_env_from_a_patch() -> None:
    errors = errors_of(spec={"jobPatches": [{"op": "add", "path": "/env/N", "value": 5}]})
    assert errors == [(("spec", "jobPatches", 0), "environment variable N must be a string, not 5 (quote it)")]


def test_colliding_parameter_names() -> None:
    errors = errors_of(parameters={"my-param": 1, "my_param": 2})
    assert errors == [(("spec", "parameters", "my_param"),
                       "parameters 'my-param' and 'my_param' both become $ORCHESTRA_PARAM_MY_PARAM; rename one of them")]


# --- collecting, raising, shapes ------------------------------------------------------------------------------------


def test_render_errors_collects_independent_problems() -> None:
    errors = errors_of(spec={"command": ["sh", "-c", "echo {{ parameters.x }}"], "parameters": {"x": 1},
                             "jobVariables": {"cpus": "many", "env": {"A": 1}},
                             "jobPatches": [{"op": "remove", "path": "/nope"}]})
    assert [p for p, _ in errors] == [("spec", "jobVariables", "cpus"), ("spec", "jobVariables", "env", "A"),
                                      ("spec", "command", 2), ("spec", "jobPatches", 0)]


def test_render_job_raises_the_first_error() -> None:
    with pytest.raises(FieldError) as caught:
        docker(spec={"jobVariables": {"cpus": "many", "env": {"A": 1}}})
    assert caught.value.path == ("spec", "jobVariables", "cpus")


def test_no_errors_for_a_good_deployment() -> None:
    assert errors_of(spec={"jobVariables": {"image": "etl:1"}}) == []


@pytest.mark.parametrize(("doc_spec", "run", "path"), [
    ({"jobVariables": ["x"]}, None, ("spec", "jobVariables")),
    ({"parameters": "x"}, None, ("spec", "parameters")),
    ({}, ["x"], ("jobVariables",)),
    ({"jobPatches": {"op": "add"}}, None, ("spec", "jobPatches")),
])
def test_wrong_shapes(doc_spec: dict[str, Any], run: Any, path: tuple[Any, ...]) -> None:
    errors = errors_of(spec=doc_spec, job_variables=run)
    assert errors and errors[0][0] == path


def test_a_bad_pool_default_is_blamed_on_the_pool_even_when_a_run_touches_its_object() -> None:
    template = default_template("process")
    template["variables"]["properties"]["env"]["additionalProperties"] = {"type": "string", "maxLength": 3}
    template["variables"]["properties"]["env"]["default"] = {"LONG": "toolong"}
    errors = render_errors(template, deployment(), job_variables={"env": {"B": "ok"}})
    assert errors[0].path == ("baseJobTemplate", "variables", "properties", "env", "default", "LONG")
