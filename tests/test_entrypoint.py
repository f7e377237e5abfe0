"""``python -m orchestra.entrypoint FILE:FUNCTION`` run as a real process.

Most tests run the module with ``subprocess.run`` and check its exit code and
streams; two run it through the process runner, as a deployment would, to
check that a traceback lands in the run's log and that output is live.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestra.runners.process import ProcessHandle, ProcessRunner

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

FLOW = """
import asyncio
import os
import sys
import time

from helpers import greeting


def main(region, full=False):
    print(greeting(region), "full" if full else "partial")
    return 5


async def amain(region):
    await asyncio.sleep(0)
    print("async", region)


def boom():
    print("about to fail")
    raise ValueError("boom")


def inner_type_error():
    return len(3)


def bye(code):
    sys.exit(code)


def no_args():
    print("no parameters")


def wait_for_flag(flag):
    print("started")
    while not os.path.exists(flag):
        time.sleep(0.01)
    print("finished")


NOT_A_FUNCTION = 3
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec directory with ``flows/report.py`` importing its sibling ``flows/helpers.py``."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "report.py").write_text(textwrap.dedent(FLOW))
    (flows / "helpers.py").write_text("def greeting(region):\n    return f'hello {region}'\n")
    return tmp_path


def entry(project: Path, target: str, parameters: object = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ORCHESTRA_PARAMETERS", None)
    if parameters is not None:
        env["ORCHESTRA_PARAMETERS"] = parameters if isinstance(parameters, str) else json.dumps(parameters)
    return subprocess.run(
        [PY, "-m", "orchestra.entrypoint", target],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_sync_function_gets_parameters_as_keyword_arguments(project: Path) -> None:
    done = entry(project, "flows/report.py:main", {"region": "eu", "full": True})
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello eu full\n", "")


def test_returned_int_is_not_an_exit_code(project: Path) -> None:
    done = entry(project, "flows/report.py:main", {"region": "us"})
    assert (done.returncode, done.stdout) == (0, "hello us partial\n")


def test_async_function_is_awaited(project: Path) -> None:
    done = entry(project, "flows/report.py:amain", {"region": "eu"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "async eu\n", "")


def test_absent_parameters_mean_none(project: Path) -> None:
    done = entry(project, "flows/report.py:no_args")
    assert (done.returncode, done.stdout) == (0, "no parameters\n")


def test_exception_exits_1_with_the_traceback_on_stderr(project: Path) -> None:
    done = entry(project, "flows/report.py:boom", {})
    assert done.returncode == 1
    assert done.stdout == "about to fail\n"
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("ValueError: boom")


def test_type_error_inside_the_function_is_a_failure_not_a_usage_error(project: Path) -> None:
    done = entry(project, "flows/report.py:inner_type_error", {})
    assert done.returncode == 1
    assert "TypeError: object of type 'int' has no len()" in done.stderr


def test_sys_exit_in_the_function_keeps_its_code(project: Path) -> None:
    assert entry(project, "flows/report.py:bye", {"code": 3}).returncode == 3


@pytest.mark.parametrize(
    ("target", "parameters", "message"),
    [
        ("flows/report.py:absent", {}, "flows/report.py has no function 'absent'; functions it defines: amain, boom"),
        ("flows/report.py:NOT_A_FUNCTION", {}, "flows/report.py:NOT_A_FUNCTION is a int, not a function"),
        ("flows/missing.py:main", {}, "entrypoint file 'flows/missing.py' not found"),
        ("flows/report.py", {}, "'flows/report.py' is not an entrypoint; expected path/to/file.py:function"),
        ("flows/report.py:main", {"region": "eu", "colour": "red"}, "got an unexpected keyword argument 'colour'"),
        ("flows/report.py:main", {"full": True}, "missing a required argument: 'region'"),
        ("flows/report.py:main", "{not json", "ORCHESTRA_PARAMETERS is not valid JSON"),
        ("flows/report.py:main", "[1, 2]", "ORCHESTRA_PARAMETERS must be a JSON object, got list"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(project: Path, target: str, parameters: object, message: str) -> None:
    done = entry(project, target, parameters)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("orchestra.entrypoint: error: ")
    assert message in done.stderr


def test_bad_kwarg_message_shows_the_signature(project: Path) -> None:
    done = entry(project, "flows/report.py:main", {"region": "eu", "colour": "red"})
    assert "parameters do not fit main(region, full=False)" in done.stderr


def test_import_time_error_is_a_failure_of_the_code(project: Path) -> None:
    (project / "flows" / "broken.py").write_text("import no_such_module_xyz\n\ndef main():\n    pass\n")
    done = entry(project, "flows/broken.py:main")
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in done.stderr


# --- through the process runner, as a deployment runs it --------------------------------


@pytest.fixture
def run_entry(project: Path) -> Iterator[Callable[[str, dict[str, object]], tuple[ProcessHandle, Path]]]:
    runner = ProcessRunner(project)
    handles: list[ProcessHandle] = []

    def start(target: str, parameters: dict[str, object]) -> tuple[ProcessHandle, Path]:
        log = project / "logs" / f"{len(handles)}.log"
        job = {
            "command": [PY, "-m", "orchestra.entrypoint", target],
            "env": {"PYTHONPATH": str(REPO), "ORCHESTRA_PARAMETERS": json.dumps(parameters)},
        }
        handles.append(runner.start("run", job, log))
        return handles[-1], log

    yield start
    for handle in handles:
        handle.kill()
        handle.wait(10)


def test_traceback_lands_in_the_run_log_after_the_output(run_entry: Callable[..., tuple[ProcessHandle, Path]]) -> None:
    handle, log = run_entry("flows/report.py:boom", {})
    assert handle.wait(30) == 1
    text = log.read_text()
    assert text.startswith("about to fail\nTraceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: boom")


def test_output_is_live_while_the_function_runs(
    run_entry: Callable[..., tuple[ProcessHandle, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the entrypoint itself must flush
    flag = tmp_path / "flag"
    handle, log = run_entry("flows/report.py:wait_for_flag", {"flag": str(flag)})
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text() == "started\n"):
        assert time.monotonic() < deadline, "the first line never reached the log"
        time.sleep(0.01)
    assert handle.poll() is None
    flag.touch()
    assert handle.wait(30) == 0
    assert log.read_text() == "started\nfinished\n"
