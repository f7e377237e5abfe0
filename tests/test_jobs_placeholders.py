"""Placeholders in a pool's jobConfiguration: typing, interpolation, built-ins, and failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra.errors import FieldError
from orchestra.jobs import check_template, render_errors, render_job

SCHEMA = {
    "type": "object",
    "properties": {
        "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
        "image": {"type": "string", "default": "alpine:3"},
        "count": {"type": "integer", "default": 3},
        "ratio": {"type": "number", "default": 0.5},
        "flag": {"type": "boolean", "default": True},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
        "meta": {"type": "object", "default": {"k": "v"}},
        "nothing": {"type": ["string", "null"], "default": None},
        "optional": {"type": "string"},
        "my-var": {"type": "string", "default": "dash"},
    },
}


def template(config: dict[str, Any]) -> dict[str, Any]:
    return {"variables": SCHEMA, "jobConfiguration": config}


def deployment(**spec: Any) -> dict[str, Any]:
    spec.setdefault("command", ["run"])
    return {"apiVersion": "orchestra/v1", "kind": "Deployment",
            "metadata": {"name": "etl", "labels": {"team": "data", "app.kubernetes.io/name": "etl"}},
            "spec": {"pool": "p", **spec}}


def render(value: Any, **kwargs: Any) -> Any:
    """Render ``{"x": value}`` and return what ``x`` became."""
    kwargs.setdefault("run_id", "run-42")
    spec = kwargs.pop("spec", {"parameters": {"region": "eu", "n": 7, "opts": {"deep": [1, 2]}, "2x": "two",
                                              "my-param": "dashed", "none": None}})
    return render_job(template({"x": value}), deployment(**spec), **kwargs).job["x"]


TYPED = [
    ("string variable", "{{ image }}", "alpine:3"),
    ("integer keeps its type", "{{ count }}", 3),
    ("number keeps its type", "{{ ratio }}", 0.5),
    ("boolean keeps its type", "{{ flag }}", True),
    ("list stays a list", "{{ tags }}", ["a", "b"]),
    ("dict stays a dict", "{{ meta }}", {"k": "v"}),
    ("null stays null", "{{ nothing }}", None),
    ("no whitespace needed", "{{count}}", 3),
    ("lots of whitespace", "{{   count \t }}", 3),
    ("dashed variable name", "{{ my-var }}", "dash"),
    ("parameter keeps its type", "{{ parameters.n }}", 7),
    ("nested parameter", "{{ parameters.opts.deep }}", [1, 2]),
    ("list index in a parameter", "{{ parameters.opts.deep.1 }}", 2),
    ("parameter starting with a digit", "{{ parameters.2x }}", "two"),
    ("dashed parameter", "{{ parameters.my-param }}", "dashed"),
    ("all parameters", "{{ parameters }}", {"region": "eu", "n": 7, "opts": {"deep": [1, 2]}, "2x": "two",
                                           "my-param": "dashed", "none": None}),
    ("run id", "{{ run.id }}", "run-42"),
    ("deployment name", "{{ deployment.name }}", "etl"),
    ("deployment label", "{{ deployment.labels.team }}", "data"),
    ("label key with dots and slash", "{{ deployment.labels.app.kubernetes.io/name }}", "etl"),
    ("all labels", "{{ deployment.labels }}", {"team": "data", "app.kubernetes.io/name": "etl"}),
    ("scheduled time absent", "{{ scheduledTime }}", None),
    ("command", "{{ command }}", ["run"]),
]


@pytest.mark.parametrize(("value", "expected"), [t[1:] for t in TYPED], ids=[t[0] for t in TYPED])
def test_a_whole_placeholder_takes_the_value_with_its_type(value: str, expected: Any) -> None:
    assert render(value) == expected


INTERPOLATED = [
    ("string", "img={{ image }}", "img=alpine:3"),
    ("integer", "n={{ count }}", "n=3"),
    ("boolean as JSON", "{{ flag }}!", "true!"),
    ("list as compact JSON", "tags: {{ tags }}", 'tags: ["a","b"]'),
    ("dict as compact JSON", "meta={{ meta }}", 'meta={"k":"v"}'),
    ("null as JSON", "x{{ nothing }}", "xnull"),
    ("several placeholders", "{{ deployment.name }}/{{ run.id }}/{{ parameters.region }}", "etl/run-42/eu"),
    ("outer whitespace makes it a longer string", " {{ count }}", " 3"),
    ("no placeholder", "plain text", "plain text"),
    ("single braces are text", "{ count }", "{ count }"),
    ("unicode kept", "{{ parameters.region }}-é", "eu-é"),
]


@pytest.mark.parametrize(("value", "expected"), [t[1:] for t in INTERPOLATED], ids=[t[0] for t in INTERPOLATED])
def test_placeholders_inside_longer_strings_are_interpolated(value: str, expected: str) -> None:
    assert render(value) == expected


def test_scheduled_time_when_given() -> None:
    assert render("at {{ scheduledTime }}", scheduled_time="2024-03-31T02:30:00+02:00") == "at 2024-03-31T02:30:00+02:00"


def test_nested_structures_are_rendered_and_non_strings_kept() -> None:
    config = {"a": [{"b": "{{ count }}"}, 5, None, "{{ image }}"], "c": {"d": {"e": "{{ tags }}"}}, "f": False}
    job = render_job(template(config), deployment()).job
    assert job["a"] == [{"b": 3}, 5, None, "alpine:3"]
    assert job["c"] == {"d": {"e": ["a", "b"]}}
    assert job["f"] is False


def test_a_variable_without_value_drops_its_key_and_list_item() -> None:
    config = {"opt": "{{ optional }}", "list": ["x", "{{ optional }}", "y"], "kept": "{{ nothing }}"}
    job = render_job(template(config), deployment()).job
    assert "opt" not in job and job["list"] == ["x", "y"] and job["kept"] is None


def test_null_in_job_variables_removes_the_key_from_the_job() -> None:
    job = render_job(template({"image": "{{ image }}"}), deployment(jobVariables={"image": None})).job
    assert "image" not in job


def test_rendered_values_are_copies() -> None:
    rendered = render_job(template({"t": "{{ tags }}"}), deployment())
    rendered.job["t"].append("c")
    assert rendered.variables["tags"] == ["a", "b"]


UNRESOLVABLE = [
    ("unknown parameter", "{{ parameters.nope }}", "the run has no parameter 'nope'"),
    ("unknown nested key", "{{ parameters.opts.shallow }}", "parameter 'opts' has no 'shallow'"),
    ("unknown label", "{{ deployment.labels.owner }}", "the deployment has no label 'owner'"),
    ("variable without value inside a string", "x={{ optional }}", "job variable 'optional' has no value"),
]


@pytest.mark.parametrize(("value", "message"), [u[1:] for u in UNRESOLVABLE], ids=[u[0] for u in UNRESOLVABLE])
def test_unresolvable_placeholders_are_errors(value: str, message: str) -> None:
    with pytest.raises(FieldError) as caught:
        render(value)
    assert caught.value.path == ("baseJobTemplate", "jobConfiguration", "x")
    assert message in caught.value.message
    assert "in the pool's base job template" in caught.value.message


CHECKS = [
    ("unknown name", {"x": "{{ imag }}"}, ("jobConfiguration", "x"), "unknown placeholder '{{ imag }}'; did you mean '{{ image }}'?"),
    ("unknown root", {"x": "{{ flow.name }}"}, ("jobConfiguration", "x"), "unknown placeholder"),
    ("run without id", {"x": "{{ run }}"}, ("jobConfiguration", "x"), "unknown placeholder"),
    ("run.attempt is not a built-in", {"x": "{{ run.attempt }}"}, ("jobConfiguration", "x"), "unknown placeholder"),
    ("inside a longer string", {"x": "a {{ image }} {{ nope }}"}, ("jobConfiguration", "x"), "'{{ nope }}'"),
    ("nested path", {"a": [{"b": "{{ nope }}"}]}, ("jobConfiguration", "a", 0, "b"), "unknown placeholder"),
    ("malformed", {"x": "{{ image | upper }}"}, ("jobConfiguration", "x"), "malformed placeholder"),
    ("go template", {"x": "{{.Name}}"}, ("jobConfiguration", "x"), "malformed placeholder"),
    ("empty", {"x": "{{ }}"}, ("jobConfiguration", "x"), "malformed placeholder"),
    ("unclosed", {"x": "{{ image"}, ("jobConfiguration", "x"), "'{{' without a matching '}}'"),
    ("placeholder in a key", {"{{ image }}": "x"}, ("jobConfiguration", "{{ image }}"), "not rendered in keys"),
]


@pytest.mark.parametrize(("config", "path", "message"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_check_template_fails_closed(config: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
    errors = check_template(template(config))
    assert [e.path for e in errors] == [path]
    assert message in errors[0].message


def test_check_template_reports_every_problem() -> None:
    errors = check_template(template({"a": "{{ nope }}", "b": "{{ image }}", "c": ["{{ zap }}"]}))
    assert [e.path for e in errors] == [("jobConfiguration", "a"), ("jobConfiguration", "c", 0)]


def test_render_refuses_a_template_with_unknown_placeholders() -> None:
    errors = render_errors(template({"a": "{{ nope }}"}), deployment())
    assert [e.path for e in errors] == [("baseJobTemplate", "jobConfiguration", "a")]
    assert "in the pool's base job template" in errors[0].message


TEMPLATE_SHAPES = [
    ("not an object", [], (), "must be an object"),
    ("unknown top-level key", {"variables": SCHEMA, "jobConfiguration": {}, "extra": 1}, ("extra",), "unknown key"),
    ("configuration not an object", {"variables": SCHEMA, "jobConfiguration": []}, ("jobConfiguration",),
     "must be an object"),
    ("missing configuration", {"variables": SCHEMA}, ("jobConfiguration",), "must be an object"),
    ("variables not a schema", {"variables": [], "jobConfiguration": {}}, ("variables",), "JSON Schema"),
    ("invalid schema", {"variables": {"type": "object", "properties": {"a": {"type": "strin"}}},
                        "jobConfiguration": {}}, ("variables", "properties", "a", "type"), "not a valid draft-07"),
    ("schema not of an object", {"variables": {"type": "array"}, "jobConfiguration": {}}, ("variables", "type"),
     "type 'object'"),
    ("reserved variable name", {"variables": {"type": "object", "properties": {"command": {}}},
                                "jobConfiguration": {}}, ("variables", "properties", "command"), "reserved"),
    ("default breaks its schema", {"variables": {"type": "object", "properties": {"n": {"type": "integer",
                                                                                       "default": "x"}}},
                                   "jobConfiguration": {}}, ("variables", "properties", "n", "default"),
     "the default does not satisfy the schema"),
]


@pytest.mark.parametrize(("value", "path", "message"), [t[1:] for t in TEMPLATE_SHAPES],
                         ids=[t[0] for t in TEMPLATE_SHAPES])
def test_check_template_shapes(value: Any, path: tuple[Any, ...], message: str) -> None:
    errors = check_template(value)
    assert errors and errors[0].path == path
    assert message in errors[0].message


def test_required_variables_without_default_are_fine_in_the_template() -> None:
    schema = {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}}
    assert check_template({"variables": schema, "jobConfiguration": {"image": "{{ image }}"}}) == []
