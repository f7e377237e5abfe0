"""Every class of bad input gets file:line:col, the resource and the field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestra.specs.validate import load_specs
from tests.conftest import DEPLOYMENT, POOL


def problems(tmp_path: Path, **files: str) -> list[str]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    result = load_specs([tmp_path])
    return [str(d).replace(str(tmp_path) + "/", "") for d in result.diagnostics]


def deployment(spec_lines: str, name: str = "etl") -> str:
    return (f"apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec_lines).strip("\n"), "  ") + "\n")


def test_valid_specs_have_no_problems(tmp_path: Path) -> None:
    assert problems(tmp_path, **{"pool.yaml": POOL, "d.yaml": DEPLOYMENT}) == []


def test_the_example_specs_are_valid() -> None:
    result = load_specs([Path(__file__).parent.parent / "specs"])
    assert result.diagnostics == []
    assert {r.kind for r in result.resources} == {"WorkPool", "WorkQueue", "Deployment"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # unknown field with a did-you-mean hint, positioned at the key
        ("command: [echo]\npool: local\nschedule: []\n",
         "d.yaml:7:3: Deployment/etl: spec.schedule: unknown field 'schedule'; did you mean 'schedules'?"),
        # wrong type
        ("command: [echo]\npool: local\nretries: {count: many}\n",
         "d.yaml:7:13: Deployment/etl: spec.retries.count: expected an integer, got str 'many'"),
        # dangling pool reference
        ("command: [echo]\npool: locl\n",
         "d.yaml:6:3: Deployment/etl: spec.pool: WorkPool/locl not found; did you mean 'local'?"),
        # dangling queue reference
        ("command: [echo]\npool: local\nqueue: fast\n",
         "d.yaml:7:3: Deployment/etl: spec.queue: WorkQueue/fast not found"),
        # bad cron
        ("command: [echo]\npool: local\nschedules:\n  - cron: '61 * * * *'\n",
         "d.yaml:8:7: Deployment/etl: spec.schedules[0].cron:"),
        # bad time zone
        ("command: [echo]\npool: local\nschedules:\n  - {cron: '0 * * * *', timezone: Europe/Berln}\n",
         "Deployment/etl: spec.schedules[0].timezone:"),
        # bad duration
        ("command: [echo]\npool: local\ntimeout: 10 minutes\n",
         "d.yaml:7:3: Deployment/etl: spec.timeout:"),
        ("command: [echo]\npool: local\nschedules:\n  - interval: soon\n",
         "Deployment/etl: spec.schedules[0].interval:"),
        # parameters against their schema
        ("command: [echo]\npool: local\nparameters: {n: ten}\nparameterSchema: {type: object, properties: {n: {type: integer}}}\n",
         "d.yaml:7:16: Deployment/etl: spec.parameters.n: 'ten' is not of type 'integer'"),
        # schedule parameters missing a required parameter
        ("command: [echo]\npool: local\nparameterSchema: {type: object, required: [n]}\nschedules:\n  - interval: 1h\n",
         "Deployment/etl: spec.schedules[0]: missing required parameter 'n'"),
        # job variables against the pool's variables schema
        ("command: [echo]\npool: local\njobVariables: {workingDir: 5}\n",
         "Deployment/etl: spec.jobVariables.workingDir:"),
        # an inapplicable job patch
        ("command: [echo]\npool: local\njobPatches: [{op: replace, path: /nope/x, value: 1}]\n",
         "Deployment/etl: spec.jobPatches[0]:"),
        # unknown placeholder in argv
        ("command: [echo, '{{ parameters.missing }}']\npool: local\n",
         "Deployment/etl: spec.command[1]:"),
        # a placeholder inside a shell script
        ("command: [sh, -c, 'echo {{ parameters.who }}']\npool: local\nparameters: {who: x}\n",
         "ORCHESTRA_PARAM_WHO"),
        # neither command nor entrypoint
        ("pool: local\n", "Deployment/etl: spec: a deployment needs exactly one of 'command' and 'entrypoint'"),
    ],
)
def test_each_class_of_bad_deployment(tmp_path: Path, spec: str, expected: str) -> None:
    found = problems(tmp_path, **{"pool.yaml": POOL, "d.yaml": deployment(spec)})
    assert any(expected in p for p in found), found


def test_only_a_retry_delay_may_be_zero(tmp_path: Path) -> None:
    """``delay: 0s`` says what leaving the delay out means (retry at once); a zero timeout
    or interval would mean nothing."""
    spec = "command: [echo]\npool: local\nretries: {count: 2, delay: 0s}\n"
    assert problems(tmp_path, **{"pool.yaml": POOL, "d.yaml": deployment(spec)}) == []
    spec = "command: [echo]\npool: local\nretries: {count: 2, delay: -1s}\ntimeout: 0s\n"
    found = problems(tmp_path, **{"pool.yaml": POOL, "d.yaml": deployment(spec)})
    assert any("spec.retries.delay: duration '-1s' is negative" in p for p in found), found
    assert any("spec.timeout: duration '0s' must be greater than zero" in p for p in found), found


def test_duplicates_across_files_name_both_places(tmp_path: Path) -> None:
    found = problems(tmp_path, **{"pool.yaml": POOL, "a.yaml": DEPLOYMENT, "b/c.yaml": "# x\n# y\n" + DEPLOYMENT})
    assert "a.yaml:3:12: Deployment/hello: metadata.name: duplicate Deployment/hello: also defined at b/c.yaml:4" in found
    assert "b/c.yaml:6:12: Deployment/hello: metadata.name: duplicate Deployment/hello: also defined at a.yaml:1" in found


def test_queue_pool_reference_and_queue_of_other_pool(tmp_path: Path) -> None:
    queue = "apiVersion: orchestra/v1\nkind: WorkQueue\nmetadata: {name: q}\nspec: {pool: other}\n"
    found = problems(tmp_path, **{"pool.yaml": POOL, "q.yaml": queue})
    assert found == ["q.yaml:4:8: WorkQueue/q: spec.pool: WorkPool/other not found; defined: local"]


def test_envelope_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, **{
        "a.yaml": "- just a list\n",
        "b.yaml": "apiVersion: orchestra/v2\nkind: WorkPool\nmetadata: {name: x}\nspec: {type: process}\n",
        "c.yaml": "apiVersion: orchestra/v1\nkind: Deploymnt\nmetadata: {name: x}\nspec: {}\n",
        "d.yaml": "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: Bad_Name}\nspec: {type: process}\n",
        "e.yaml": "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: p}\nspec: {type: k8s}\n",
        "f.yaml": "a: 1\na: 2\n",
    })
    assert found[0].startswith("a.yaml:1:1: a spec document must be a mapping")
    assert "b.yaml:1:1: WorkPool/x: apiVersion: expected apiVersion 'orchestra/v1', got 'orchestra/v2'" in found
    assert "c.yaml:2:1: Deploymnt/x: kind: unknown kind 'Deploymnt'; did you mean 'Deployment'?" in found
    assert any(p.startswith("d.yaml:3:12: WorkPool/Bad_Name: metadata.name: 'Bad_Name' is not a valid name") for p in found)
    assert any(p.startswith("e.yaml:4:8: WorkPool/p: spec.type: 'k8s' is not one of 'process', 'docker'") for p in found)
    assert "f.yaml:2:1: duplicate key 'a' (first defined at line 1)" in found


def test_all_errors_of_all_files_in_one_pass(tmp_path: Path) -> None:
    found = problems(tmp_path, **{
        "pool.yaml": POOL,
        "a.yaml": deployment("command: [echo]\npool: nope\n", "a"),
        "b.yaml": deployment("command: [echo]\npool: local\ntimeout: forever\n", "b"),
        "c.yaml": "x: [\n",
    })
    assert len(found) == 3, found


def test_bad_pool_template(tmp_path: Path) -> None:
    pool = """
    apiVersion: orchestra/v1
    kind: WorkPool
    metadata: {name: local}
    spec:
      type: process
      baseJobTemplate:
        variables: {type: object, properties: {env: {type: object, default: {}}}}
        jobConfiguration:
          command: "{{ command }}"
          env: "{{ enviroment }}"
    """
    found = problems(tmp_path, **{"pool.yaml": pool})
    assert any("WorkPool/local: spec.baseJobTemplate.jobConfiguration.env:" in p for p in found), found


def test_entrypoint_needs_a_process_pool(tmp_path: Path) -> None:
    docker_pool = POOL.replace("name: local", "name: boxes").replace("type: process", "type: docker")
    found = problems(tmp_path, **{"pool.yaml": docker_pool,
                                  "d.yaml": deployment("entrypoint: flows/f.py:main\npool: boxes\n")})
    assert any("Deployment/etl: spec.entrypoint: a Python entrypoint runs only in a process pool" in p
               for p in found), found


def test_entrypoint_signature_becomes_the_parameter_schema(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "f.py").write_text("def main(n: int, name: str = 'x'):\n    pass\n")
    spec = "entrypoint: flows/f.py:main\npool: local\nparameters: {n: nine}\n"
    found = problems(tmp_path, **{"pool.yaml": POOL, "d.yaml": deployment(spec)})
    assert any("spec.parameters.n: 'nine' is not of type 'integer'" in p for p in found), found
    missing = problems(tmp_path, **{"d.yaml": deployment("entrypoint: flows/none.py:main\npool: local\n")})
    assert any("Deployment/etl: spec.entrypoint:" in p for p in missing), missing
