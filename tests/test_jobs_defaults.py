"""The default base job templates: valid, documented, safe, and renderable as they are."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from orchestra.durations import parse_duration
from orchestra.errors import FieldError
from orchestra.jobs import POOL_TYPES, check_template, default_template, pool_defaults, render_job
from orchestra.jobs.defaults import DURATION_PATTERN

MINIMAL = {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "hello"},
           "spec": {"pool": "local", "command": ["echo", "hi"]}}


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_default_template_passes_its_own_checks(pool_type: str) -> None:
    template = default_template(pool_type)
    assert check_template(template) == []
    Draft7Validator.check_schema(template["variables"])


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_default_template_renders_a_minimal_deployment(pool_type: str) -> None:
    rendered = render_job(default_template(pool_type), MINIMAL, run_id="r-1")
    assert rendered.job["command"] == ["echo", "hi"]
    assert rendered.job["env"]["ORCHESTRA_RUN_ID"] == "r-1"
    assert rendered.variables == pool_defaults(default_template(pool_type)["variables"])
    assert rendered.variables_patch == []


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_every_variable_has_a_default_and_a_description(pool_type: str) -> None:
    properties = default_template(pool_type)["variables"]["properties"]
    for name, prop in properties.items():
        assert "default" in prop, name
        assert prop["description"].strip(), name


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_job_configuration_maps_every_variable_and_the_command(pool_type: str) -> None:
    template = default_template(pool_type)
    expected = {name: "{{ " + name + " }}" for name in [*template["variables"]["properties"], "command"]}
    assert template["jobConfiguration"] == expected


def test_process_template_contract() -> None:
    template = default_template("process")
    assert list(template["jobConfiguration"]) == ["command", "env", "workingDir", "terminationGracePeriod",
                                                  "logMaxBytes"]
    assert pool_defaults(template["variables"]) == {"env": {}, "workingDir": ".", "terminationGracePeriod": "10s",
                                                    "logMaxBytes": 10485760}


def test_docker_template_defaults_are_safe() -> None:
    defaults = pool_defaults(default_template("docker")["variables"])
    assert defaults["privileged"] is False
    assert defaults["network"] is None  # not "host"
    assert defaults["volumes"] == []  # no docker socket
    assert defaults["pullPolicy"] == "if-missing"
    assert defaults["autoRemove"] is True
    assert defaults["image"] == "python:3.12-slim"
    assert set(defaults) == {"image", "env", "volumes", "network", "labels", "user", "workingDir", "memory", "cpus",
                             "pullPolicy", "autoRemove", "extraHosts", "privileged", "entrypoint",
                             "terminationGracePeriod"}


def test_default_template_is_a_fresh_copy() -> None:
    first = default_template("docker")
    first["variables"]["properties"]["env"]["default"]["X"] = "1"
    first["jobConfiguration"]["image"] = "changed"
    assert default_template("docker")["variables"]["properties"]["env"]["default"] == {}
    assert default_template("docker")["jobConfiguration"]["image"] == "{{ image }}"


def test_unknown_pool_type() -> None:
    with pytest.raises(FieldError, match="unknown pool type 'kubernetes'"):
        default_template("kubernetes")


DOCKER_VALUES: list[tuple[dict[str, Any], bool]] = [
    ({"memory": "512m"}, True), ({"memory": "2g"}, True), ({"memory": "lots"}, False),
    ({"cpus": 0.5}, True), ({"cpus": 0}, False), ({"pullPolicy": "always"}, True), ({"pullPolicy": "sometimes"}, False),
    ({"volumes": ["/data:/data:ro"]}, True), ({"volumes": ["cache:/cache"]}, True), ({"volumes": ["/data"]}, False),
    ({"volumes": ["/a:relative"]}, False), ({"entrypoint": ["/bin/tini", "--"]}, True), ({"entrypoint": "tini"}, False),
    ({"extraHosts": {"db": "10.0.0.5"}}, True), ({"labels": {"team": 5}}, False), ({"imagee": "x"}, False),
    ({"terminationGracePeriod": "1m30s"}, True), ({"terminationGracePeriod": 30}, True),
    ({"terminationGracePeriod": "soon"}, False),
]


@pytest.mark.parametrize(("variables", "valid"), DOCKER_VALUES, ids=[repr(v[0]) for v in DOCKER_VALUES])
def test_docker_variables_schema(variables: dict[str, Any], valid: bool) -> None:
    schema = default_template("docker")["variables"]
    merged = {**pool_defaults(schema), **variables}
    assert Draft7Validator(schema).is_valid(merged) is valid


DURATIONS = ["90", "1.5", "90s", "15m", "1h30m", "1d 12h", "PT15M", "P1DT2H", "P2W", "10S",
             "10ms", "ms", "P", "PT", "1h 1h", "", "5x", "1s1m"]


@pytest.mark.parametrize("text", DURATIONS)
def test_duration_pattern_agrees_with_the_parser(text: str) -> None:
    try:
        parse_duration(text)
        parses = True
    except ValueError:
        parses = False
    assert bool(re.search(DURATION_PATTERN, text)) is parses


DOCS = Path(__file__).resolve().parent.parent / "docs" / "job-templates.md"


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_the_docs_show_the_default_templates_as_they_are(pool_type: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = text.split(f"<!-- default-template: {pool_type} -->\n```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == default_template(pool_type)
