"""A deployment's argv: element-by-element rendering, never a shell, and the sh -c guard."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.errors import FieldError
from orchestra.jobs import default_template, render_errors, render_job
from orchestra.jobs.command import param_env_name, script_owners

PARAMETERS = {"x": "eu", "who": "world", "n": 3, "flags": ["-a", "-b"], "cfg": {"k": 1}, "off": False,
              "my-param": "m", "2x": "t"}


def deployment(command: Any = None, **spec: Any) -> dict[str, Any]:
    if command is not None:
        spec["command"] = command
    spec.setdefault("parameters", PARAMETERS)
    return {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "etl", "labels": {"team": "d"}},
            "spec": {"pool": "p", **spec}}


def argv(command: Any, **kwargs: Any) -> list[str]:
    kwargs.setdefault("run_id", "r1")
    return render_job(default_template("process"), deployment(command), **kwargs).job["command"]


RENDERED = [
    ("no placeholders", ["echo", "hi"], ["echo", "hi"]),
    ("whole parameter", ["echo", "{{ parameters.x }}"], ["echo", "eu"]),
    ("inside an element", ["report", "--region={{ parameters.x }}"], ["report", "--region=eu"]),
    ("integer as JSON", ["sleep", "{{ parameters.n }}"], ["sleep", "3"]),
    ("list as one JSON element", ["echo", "{{ parameters.flags }}"], ["echo", '["-a","-b"]']),
    ("dict as JSON", ["echo", "{{ parameters.cfg }}"], ["echo", '{"k":1}']),
    ("false as JSON", ["echo", "{{ parameters.off }}"], ["echo", "false"]),
    ("nested", ["echo", "{{ parameters.cfg.k }}"], ["echo", "1"]),
    ("run id", ["echo", "{{ run.id }}"], ["echo", "r1"]),
    ("deployment name", ["echo", "{{ deployment.name }}"], ["echo", "etl"]),
    ("label", ["echo", "{{ deployment.labels.team }}"], ["echo", "d"]),
    ("dashed and digit parameters", ["e", "{{ parameters.my-param }}{{ parameters.2x }}"], ["e", "mt"]),
    ("string command is split", "python report.py --region {{ parameters.x }}",
     ["python", "report.py", "--region", "eu"]),
    ("string command keeps quotes", "echo 'a b' \"{{ parameters.who }}\"", ["echo", "a b", "world"]),
    ("placeholder with spaces stays one word", "echo {{   parameters.who   }}", ["echo", "world"]),
    ("positional argument after a shell script is safe", ["sh", "-c", 'echo "$1"', "sh", "{{ parameters.who }}"],
     ["sh", "-c", 'echo "$1"', "sh", "world"]),
    ("shell without -c", ["bash", "script.sh", "{{ parameters.x }}"], ["bash", "script.sh", "eu"]),
    ("python -m", ["python", "-m", "tool", "{{ parameters.x }}"], ["python", "-m", "tool", "eu"]),
    ("a shell script without placeholders", ["sh", "-c", "echo $ORCHESTRA_PARAM_X"],
     ["sh", "-c", "echo $ORCHESTRA_PARAM_X"]),
]


@pytest.mark.parametrize(("command", "expected"), [r[1:] for r in RENDERED], ids=[r[0] for r in RENDERED])
def test_each_argv_element_is_rendered_on_its_own(command: Any, expected: list[str]) -> None:
    assert argv(command) == expected


def test_scheduled_time_in_argv() -> None:
    assert argv(["report", "--at", "{{ scheduledTime }}"], scheduled_time="2024-01-01T00:00:00Z")[2] == \
        "2024-01-01T00:00:00Z"


METACHARACTERS = ["; rm -rf ~", "$(whoami)", "`id`", "a && b", "x | y", "'quoted'", '"dq"', "*", "~", "$HOME",
                  "line\nbreak", "{{ run.id }}", "a b  c", ""]


@pytest.mark.parametrize("value", METACHARACTERS)
def test_shell_metacharacters_stay_plain_text(value: str) -> None:
    job = render_job(default_template("process"), deployment(["echo", "{{ parameters.v }}", "--x={{ parameters.v }}"]),
                     parameters={"v": value}).job
    assert job["command"] == ["echo", value, f"--x={value}"]  # values are never re-rendered either
    assert job["env"]["ORCHESTRA_PARAM_V"] == value


SHELLS = [
    ("sh -c", ["sh", "-c", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("bash -c", ["bash", "-c", "echo {{ parameters.who }}"], 2, "ORCHESTRA_PARAM_WHO"),
    ("/bin/sh -c", ["/bin/sh", "-c", "{{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("zsh", ["zsh", "-c", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("dash", ["/usr/bin/dash", "-c", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("combined -ec", ["bash", "-ec", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("combined -xc", ["sh", "-xc", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("-lc", ["bash", "-lc", "echo {{ parameters.x }}"], 2, "ORCHESTRA_PARAM_X"),
    ("options before -c", ["bash", "-e", "-o", "pipefail", "-c", "echo {{ parameters.x }}"], 5,
     "ORCHESTRA_PARAM_X"),
    ("shell after env", ["/usr/bin/env", "bash", "-c", "echo {{ parameters.x }}"], 3, "ORCHESTRA_PARAM_X"),
    ("dashed parameter", ["sh", "-c", "echo {{ parameters.my-param }}"], 2, "ORCHESTRA_PARAM_MY_PARAM"),
    ("digit parameter", ["sh", "-c", "echo {{ parameters.2x }}"], 2, "ORCHESTRA_PARAM_2X"),
    ("nested parameter", ["sh", "-c", "echo {{ parameters.cfg.k }}"], 2, "ORCHESTRA_PARAM_CFG"),
    ("run id", ["sh", "-c", "echo {{ run.id }}"], 2, "ORCHESTRA_RUN_ID"),
    ("deployment name", ["sh", "-c", "echo {{ deployment.name }}"], 2, "ORCHESTRA_DEPLOYMENT"),
    ("scheduled time", ["sh", "-c", "echo {{ scheduledTime }}"], 2, "ORCHESTRA_SCHEDULED_TIME"),
    ("python -c", ["python3", "-c", "print('{{ parameters.x }}')"], 2, "ORCHESTRA_PARAM_X"),
]


@pytest.mark.parametrize(("command", "index", "variable"), [s[1:] for s in SHELLS], ids=[s[0] for s in SHELLS])
def test_placeholder_in_a_shell_script_is_an_error(command: list[str], index: int, variable: str) -> None:
    errors = render_errors(default_template("process"), deployment(command))
    assert [e.path for e in errors] == [("spec", "command", index)]
    expected = f'os.environ["{variable}"]' if command[0].startswith("python") else f'"${variable}"'
    assert f"read {expected} instead" in errors[0].message
    assert "-c' script" in errors[0].message


def test_shell_error_in_a_string_command_points_at_the_command() -> None:
    errors = render_errors(default_template("process"), deployment("bash -ec 'echo {{ parameters.who }}'"))
    assert [e.path for e in errors] == [("spec", "command")]
    assert "argument 2" in errors[0].message and "$ORCHESTRA_PARAM_WHO" in errors[0].message


def test_label_in_a_shell_script_suggests_a_positional_argument() -> None:
    errors = render_errors(default_template("process"), deployment(["sh", "-c", "echo {{ deployment.labels.team }}"]))
    assert '"$1"' in errors[0].message


@pytest.mark.parametrize(("command", "expected"), [
    (["sh", "-c", "s"], {2: "sh"}),
    (["sh", "-c", "s", "sh", "arg"], {2: "sh"}),
    (["sh", "script.sh"], {}),
    (["sh", "-e", "script.sh"], {}),
    (["bash", "--norc", "-c", "s"], {3: "bash"}),
    (["bash", "-c", "--", "s"], {3: "bash"}),
    (["sh", "-c"], {}),
    (["shellcheck", "-c", "x"], {}),
    (["python", "-m", "pkg", "-c", "x"], {}),
    (["python3.12", "-Bc", "code"], {2: "python3.12"}),
    (["echo", "sh", "-c", "x"], {3: "sh"}),  # conservative: any shell word followed by -c
])
def test_script_owners(command: list[str], expected: dict[int, str]) -> None:
    assert script_owners(command) == expected


def test_every_bad_argument_is_reported() -> None:
    errors = render_errors(default_template("process"),
                           deployment(["tool", "{{ parameters.nope }}", "{{ workingDir }}", "{{ bad name }}", 5]))
    assert [e.path for e in errors] == [("spec", "command", 4)]  # a non-string stops before rendering
    errors = render_errors(default_template("process"),
                           deployment(["tool", "{{ parameters.nope }}", "{{ workingDir }}", "{{ bad name }}"]))
    assert [e.path for e in errors] == [("spec", "command", 1), ("spec", "command", 2), ("spec", "command", 3)]
    assert "no parameter 'nope'" in errors[0].message
    assert "not available in a command" in errors[1].message
    assert "malformed placeholder" in errors[2].message


@pytest.mark.parametrize(("command", "message"), [
    ("echo 'unclosed", "cannot split"),
    ("   ", "the command is empty"),
    ([], "non-empty list"),
    (["echo", 5], "must be a string"),
    (["echo", "{{ command }}"], "not available in a command"),
])
def test_malformed_commands(command: Any, message: str) -> None:
    errors = render_errors(default_template("process"), deployment(command))
    assert errors and errors[0].path[:2] == ("spec", "command")
    assert message in errors[0].message


def test_entrypoint_runs_the_entrypoint_module() -> None:
    job = render_job(default_template("process"), deployment(entrypoint="flows/report.py:main"),
                     python="/opt/venv/bin/python").job
    assert job["command"] == ["/opt/venv/bin/python", "-m", "orchestra.entrypoint", "flows/report.py:main"]
    assert job["env"]["ORCHESTRA_PARAMETERS"].startswith('{"x":"eu"')


def test_no_command_and_no_entrypoint() -> None:
    with pytest.raises(FieldError, match="neither 'command' nor 'entrypoint'"):
        render_job(default_template("process"), deployment())


@pytest.mark.parametrize(("name", "expected"), [
    ("who", "ORCHESTRA_PARAM_WHO"), ("my-param", "ORCHESTRA_PARAM_MY_PARAM"), ("2x", "ORCHESTRA_PARAM_2X"),
    ("camelCase", "ORCHESTRA_PARAM_CAMELCASE"), ("a.b c", "ORCHESTRA_PARAM_A_B_C"), ("ünï", "ORCHESTRA_PARAM__N_"),
])
def test_param_env_name(name: str, expected: str) -> None:
    assert param_env_name(name) == expected


@settings(max_examples=200, deadline=None)
@given(value=st.text())
def test_any_string_parameter_reaches_argv_and_env_verbatim(value: str) -> None:
    job = render_job(default_template("process"), deployment(["tool", "{{ parameters.v }}", "-x{{ parameters.v }}"]),
                     parameters={"v": value}).job
    assert job["command"] == ["tool", value, f"-x{value}"]
    assert job["env"]["ORCHESTRA_PARAM_V"] == value
