"""The Docker runner: pure job translation, then against a real engine.

The first part needs no engine (validation, the container a job becomes, the
log cursor, an unreachable engine). The rest runs containers of the local
test image (``orchestra-test/busybox:latest``, pullPolicy ``never``) and
skips without an engine, or fails with ``ORCHESTRA_REQUIRE_DOCKER=1``; see
``docker_fixtures``. Jobs wait on "gate" files in a mounted directory, so
tests decide when a container moves on instead of sleeping; every container
a test starts carries its labels and is removed by a finalizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from docker_fixtures import (
    TEST_IMAGE,
    docker_engine_fixture,
    docker_labels_fixture,
    labelled_containers,
    make_runner_fixture,
    wait_for,
)
from orchestra.jobs import default_template, render_job
from orchestra.runners.base import LaunchError, Runner
from orchestra.runners.docker import DockerHandle, DockerRunner, parse_ident
from orchestra.runners.docker_job import container_spec, memory_bytes, resolve_volume, validate_docker_job
from orchestra.runners.docker_logs import LogCursor, Position, cursor_path, split_frame
from orchestra.runners.logs import read_log

__all__ = ["docker_engine_fixture", "docker_labels_fixture", "make_runner_fixture"]

MakeRunner = Callable[..., DockerRunner]
GATE = "while [ ! -e /gates/{0} ]; do sleep 0.05; done"


def job(*script: str, **fields: Any) -> dict[str, Any]:
    """A docker job of the test image running ``sh -c`` over the script lines, gates mounted."""
    base: dict[str, Any] = {"image": TEST_IMAGE, "pullPolicy": "never", "command": ["sh", "-c", "\n".join(script)],
                            "volumes": ["./gates:/gates"], "terminationGracePeriod": 5}
    return {**base, **fields}


def output(log: Path) -> str:
    """The job's output in the log, without orchestra's own notes."""
    text = read_log(log)[0].decode()
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("[orchestra]"))


@pytest.fixture(name="gates")
def gates_fixture(tmp_path: Path) -> Callable[[str], None]:
    """``open_gate(name)``: let jobs waiting on /gates/NAME go on."""
    (tmp_path / "gates").mkdir()
    return lambda name: (tmp_path / "gates" / name).touch()


# --- without an engine ------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("command", "echo hi", "not one string: jobs never run through a shell"),
    ("image", "", "image: must be a non-empty string"),
    ("volumes", ["data"], "is not host-path-or-volume:/container/path[:ro]"),
    ("volumes", ["~/x:/x"], "'~' is not expanded"),
    ("volumes", ["/a:/b:rx"], "mode 'rx' is not ro, rw, z or Z"),
    ("labels", {"orchestra.run-id": "x"}, "labels.orchestra.run-id: the orchestra.* labels are reserved"),
    ("memory", "1m", "below Docker's minimum of 6m"),
    ("memory", "lots", "not a memory size"),
    ("cpus", 0, "cpus: must be a positive number"),
    ("pullPolicy", "sometimes", "pullPolicy: must be one of never, if-missing, always"),
    ("autoRemove", "yes", "autoRemove: must be true or false"),
    ("terminationGracePeriod", "soon", "terminationGracePeriod:"),
    ("workdir", "/x", "workdir: unknown field"),
])
def test_validate_job_names_the_field_and_the_problem(field: str, value: Any, problem: str) -> None:
    problems = validate_docker_job({"image": "busybox", field: value})
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_default_template_renders_a_valid_job() -> None:
    dep = {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"pool": "p", "command": ["true"]}}
    assert validate_docker_job(render_job(default_template("docker"), dep).job) == []


def test_container_spec_translates_the_job(tmp_path: Path) -> None:
    spec = container_spec("run-1", {
        "image": "etl:1", "command": ["run"], "env": {"A": "1"}, "volumes": ["./data:/data:ro", "cache:/cache"],
        "memory": "512m", "cpus": 0.5, "extraHosts": {"db": "10.0.0.5"}, "labels": {"team": "data"},
        "workingDir": "/work", "user": "1000", "autoRemove": False, "terminationGracePeriod": "30s",
    }, tmp_path, {"orchestra.pool": "p"})
    kwargs = spec.create_kwargs
    assert kwargs["volumes"] == [f"{tmp_path.resolve()}/data:/data:ro", "cache:/cache"]
    assert kwargs["mem_limit"] == 512 * 1024**2 and kwargs["nano_cpus"] == 500_000_000
    assert kwargs["environment"] == {"ORCHESTRA_RUN_ID": "run-1", "A": "1"}
    assert kwargs["privileged"] is False and "network" not in kwargs
    assert kwargs["labels"]["team"] == "data" and kwargs["labels"]["orchestra.run-id"] == "run-1"
    assert kwargs["labels"]["orchestra.managed"] == "true" and kwargs["labels"]["orchestra.pool"] == "p"
    assert (spec.remembered.auto_remove, spec.remembered.grace) == (False, 30.0)


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5G", 3 * 1024**3 // 2),
                                            ("512Mi", 512 * 1024**2), ("64MB", 64 * 1024**2), ("1000", 1000)])
def test_memory_takes_dockers_binary_units(text: str, size: int) -> None:
    assert memory_bytes(text) == size


def test_volume_paths_relative_to_the_spec_directory(tmp_path: Path) -> None:
    assert resolve_volume("../x:/x", tmp_path / "specs") == f"{tmp_path.resolve()}/x:/x"
    assert resolve_volume("named:/x:ro", tmp_path) == "named:/x:ro"


def test_split_frame_and_a_position_that_counts_messages_from_the_anchor_second() -> None:
    assert split_frame(b"2026-11-26T17:40:06.834915025Z hi\n") == (1795714806, b"hi\n")
    assert split_frame(b"no time here") == (None, b"no time here")
    pos = Position().after(10, 3).after(10, 3).after(9, 1).after(11, 2)  # 9: a stderr line stamped earlier
    assert (pos.anchor, pos.count, pos.offered, pos.since) == (11, 1, 9, 11)


def test_a_cursor_is_read_back_only_for_its_own_container(tmp_path: Path) -> None:
    cursor = LogCursor(tmp_path / "r.log", "abc", Position())
    cursor.advance(100, 5)
    cursor.close()
    assert LogCursor.read(tmp_path / "r.log", "abc") == Position(100, 1, 5)
    assert LogCursor.read(tmp_path / "r.log", "other") == Position()


def test_a_foreign_ident_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a docker runner ident"):
        DockerRunner(tmp_path).reap_orphan("pid:1:2:boot")
    assert parse_ident("docker:abc") == "abc"


# --- against the engine -----------------------------------------------------------------


def test_a_job_runs_and_its_container_is_removed(make_runner: MakeRunner, docker_engine: Any,
                                                  docker_labels: dict[str, str], tmp_path: Path) -> None:
    runner: Runner = make_runner()
    handle = runner.start("ok", job("echo hello; echo oops >&2"), tmp_path / "ok.log")
    assert handle.ident.startswith("docker:")
    assert handle.wait(30) == 0
    assert sorted(output(tmp_path / "ok.log").splitlines()) == ["hello", "oops"]
    assert labelled_containers(docker_engine, docker_labels) == []
    assert not cursor_path(tmp_path / "ok.log").exists()


def test_the_exit_code_decides(make_runner: MakeRunner, tmp_path: Path) -> None:
    assert make_runner().start("bad", job("exit 3"), tmp_path / "bad.log").wait(30) == 3


def test_env_parameters_and_a_volume_reach_the_container(make_runner: MakeRunner, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("from the host\n")
    dep = {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "etl"}, "spec": {
        "pool": "containers", "parameters": {"who": "team"},
        "command": ["sh", "-c", 'echo "$GREETING $ORCHESTRA_PARAM_WHO $ORCHESTRA_DEPLOYMENT"; cat /data/in.txt; '
                                'echo written > /data/out.txt'],
        "jobVariables": {"image": TEST_IMAGE, "pullPolicy": "never", "env": {"GREETING": "hello"}},
        "jobPatches": [{"op": "add", "path": "/volumes/-", "value": "./data:/data"}]}}
    rendered = render_job(default_template("docker"), dep, parameters={"who": "team"}, run_id="run-env").job
    handle = make_runner().start("run-env", rendered, tmp_path / "env.log")
    assert handle.wait(30) == 0
    assert output(tmp_path / "env.log") == "hello team etl\nfrom the host\n"
    assert (tmp_path / "data" / "out.txt").read_text() == "written\n"


def test_limits_labels_and_settings_are_applied(make_runner: MakeRunner, docker_engine: Any, tmp_path: Path) -> None:
    handle = make_runner().start("lim", job("true", memory="64m", cpus=0.5, autoRemove=False, workingDir="/tmp",
                                            user="65534", extraHosts={"db": "10.1.2.3"}, labels={"team": "x"}),
                                 tmp_path / "lim.log", pool="containers")
    assert handle.wait(30) == 0
    attrs = docker_engine.containers.get(parse_ident(handle.ident)).attrs  # kept: autoRemove false
    host = attrs["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["Privileged"]) == (64 * 1024**2, 500_000_000, False)
    assert host["ExtraHosts"] == ["db:10.1.2.3"]
    assert (attrs["Config"]["User"], attrs["Config"]["WorkingDir"]) == ("65534", "/tmp")
    labels = attrs["Config"]["Labels"]
    assert {labels["team"], labels["orchestra.pool"], labels["orchestra.run-id"]} == {"x", "containers", "lim"}
    assert "kept (autoRemove: false)" in read_log(tmp_path / "lim.log")[0].decode()


def test_output_is_in_the_log_while_the_container_runs(make_runner: MakeRunner, gates: Callable[[str], None],
                                                       tmp_path: Path) -> None:
    log = tmp_path / "live.log"
    handle = make_runner().start("live", job("echo first", GATE.format("go"), "echo second"), log)
    wait_for(lambda: output(log) == "first\n", what="the first line while the job runs")
    assert handle.poll() is None
    gates("go")
    assert handle.wait(30) == 0
    assert output(log) == "first\nsecond\n"


def test_terminate_stops_and_removes_the_container_within_grace(make_runner: MakeRunner, docker_engine: Any,
                                                                docker_labels: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "term.log"
    handle = make_runner().start("term", job("trap 'echo got TERM; exit 0' TERM", "echo ready",
                                             "while true; do sleep 0.1; done"), log)
    wait_for(lambda: "ready" in output(log), what="the job to be ready")
    began = time.monotonic()
    assert handle.terminate(10) == 0
    assert time.monotonic() - began < 5
    assert "got TERM" in output(log)
    assert labelled_containers(docker_engine, docker_labels) == []


def test_a_container_ignoring_sigterm_is_killed_after_grace(make_runner: MakeRunner, docker_engine: Any,
                                                            docker_labels: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    handle = make_runner().start("stubborn", job("trap '' TERM", "echo ready", "while true; do sleep 0.1; done"), log)
    wait_for(lambda: "ready" in output(log), what="the job to be ready")
    began = time.monotonic()
    assert handle.terminate(1) == 137  # 128 + SIGKILL, as the engine reports it
    assert 1 <= time.monotonic() - began < 8
    assert labelled_containers(docker_engine, docker_labels) == []


def test_a_missing_image_under_never_names_image_and_policy(make_runner: MakeRunner, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"image 'orchestra-test/absent:1' is not present .* pullPolicy is 'never'"):
        make_runner().start("img", job("true", image="orchestra-test/absent:1"), tmp_path / "img.log")


def test_a_failed_pull_is_a_launch_error_in_the_engines_words(make_runner: MakeRunner, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"cannot pull image '127.0.0.1:1/absent:1' \(pullPolicy if-missing\): .+"):
        make_runner().start("pull", job("true", image="127.0.0.1:1/absent:1", pullPolicy="if-missing"),
                            tmp_path / "pull.log")


def test_a_command_the_image_lacks_fails_to_start_and_leaves_no_container(
        make_runner: MakeRunner, docker_engine: Any, docker_labels: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"cannot start the container .*no-such-program"):
        make_runner().start("exe", job("true", command=["no-such-program"]), tmp_path / "exe.log")
    assert labelled_containers(docker_engine, docker_labels) == []


def test_a_container_killed_for_memory_says_so_in_the_log(make_runner: MakeRunner, tmp_path: Path) -> None:
    log = tmp_path / "oom.log"
    greedy = job('x=$(head -c 100000000 /dev/zero | tr "\\0" a)', "echo survived", memory="8m")
    assert make_runner().start("oom", greedy, log).wait(30) == 137
    assert "ran out of memory (limit of 8m) and was killed" in read_log(log)[0].decode()
    assert "survived" not in output(log)


def test_the_log_is_bounded(make_runner: MakeRunner, tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    assert make_runner().start("big", job("seq 1 2000", logMaxBytes=100), log).wait(30) == 0
    text = read_log(log)[0].decode()
    assert text.startswith("1\n2\n3\n") and "[orchestra] log truncated at 100 bytes" in text
    assert len(text) < 200


# --- daemon restarts: adopt, reap, clean up ---------------------------------------------------------------


def test_a_fresh_runner_adopts_a_running_container(make_runner: MakeRunner, docker_engine: Any,
                                                  docker_labels: dict[str, str], gates: Callable[[str], None],
                                                  tmp_path: Path) -> None:
    log = tmp_path / "adopt.log"
    first = make_runner()
    handle = first.start("adopt", job("echo one", GATE.format("a"), "echo two >&2", GATE.format("b"),
                                      "echo three", "exit 7"), log)
    wait_for(lambda: output(log) == "one\n", what="the first line")
    first.close()  # the daemon dies; the container runs on
    gates("a")  # output nobody follows
    container = docker_engine.containers.get(parse_ident(handle.ident))
    wait_for(lambda: b"two" in container.logs(), what="output while nobody follows")
    adopted = make_runner().adopt(handle.ident, log, run_id="adopt")
    assert adopted is not None and adopted.ident == handle.ident
    gates("b")
    assert adopted.wait(30) == 7
    assert output(log) == "one\ntwo\nthree\n"
    assert "again after a daemon restart" in read_log(log)[0].decode()
    assert labelled_containers(docker_engine, docker_labels) == []


def test_adopting_an_ended_container_reports_its_exit_code_and_missing_output(
        make_runner: MakeRunner, docker_engine: Any, gates: Callable[[str], None], tmp_path: Path) -> None:
    log = tmp_path / "ended.log"
    first = make_runner()
    handle = first.start("ended", job("echo before", GATE.format("go"), "echo after", "exit 4"), log)
    wait_for(lambda: output(log) == "before\n", what="the first line")
    first.close()
    gates("go")
    container = docker_engine.containers.get(parse_ident(handle.ident))
    wait_for(lambda: (container.reload(), container.status)[1] == "exited", what="the container to exit")
    adopted = make_runner().adopt(handle.ident, log)
    assert adopted is not None and adopted.wait(30) == 4
    assert output(log) == "before\nafter\n"


def test_three_containers_adopted_end_with_their_whole_logs_and_no_new_container(
        make_runner: MakeRunner, docker_engine: Any, docker_labels: dict[str, str], gates: Callable[[str], None],
        tmp_path: Path) -> None:
    # The second half is written while the first runner lets go and the second takes over.
    script = ['for i in $(seq 1 60); do echo "out $i"; echo "err $i" >&2; done', "echo half", GATE.format("go"),
              'for i in $(seq 61 150); do echo "out $i"; echo "err $i" >&2; [ $((i % 10)) = 0 ] && sleep 0.05; done',
              "exit 0"]
    first = make_runner()
    handles = [first.start(f"r{k}", job(*script), tmp_path / f"r{k}.log") for k in range(3)]
    wait_for(lambda: all("half" in output(tmp_path / f"r{k}.log") for k in range(3)), what="every run to reach half")
    gates("go")
    wait_for(lambda: all("out 70\n" in output(tmp_path / f"r{k}.log") for k in range(3)), what="the second half")
    first.close()
    ids = sorted(parse_ident(h.ident) for h in handles)
    second = make_runner()
    adopted = [second.adopt(h.ident, tmp_path / f"r{k}.log") for k, h in enumerate(handles)]
    assert sorted(str(c.id) for c in labelled_containers(docker_engine, docker_labels)) == ids
    assert all(isinstance(a, DockerHandle) and a.wait(30) == 0 for a in adopted)
    expected = sorted([f"out {i}" for i in range(1, 151)] + [f"err {i}" for i in range(1, 151)] + ["half"])
    for k in range(3):
        lines = output(tmp_path / f"r{k}.log").splitlines()
        assert sorted(lines) == expected, f"run {k}: lost or doubled lines"
        assert [line for line in lines if line.startswith("out")] == [f"out {i}" for i in range(1, 151)]
    assert labelled_containers(docker_engine, docker_labels) == []


def test_adopt_of_a_gone_or_foreign_container_is_none(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = make_runner()
    handle = runner.start("gone", job("true"), tmp_path / "gone.log")
    assert handle.wait(30) == 0
    assert make_runner().adopt(handle.ident, tmp_path / "gone.log") is None
    assert make_runner().adopt("docker:" + "0" * 64, tmp_path / "x.log") is None


def test_reap_orphan_kills_and_removes_a_container_left_behind(make_runner: MakeRunner, docker_engine: Any,
                                                               docker_labels: dict[str, str], tmp_path: Path) -> None:
    first = make_runner()
    handle = first.start("orphan", job("echo up", "while true; do sleep 0.1; done"), tmp_path / "orphan.log")
    wait_for(lambda: "up" in output(tmp_path / "orphan.log"), what="the job to start")
    first.close()
    second = make_runner()
    assert second.reap_orphan(handle.ident) is True
    assert labelled_containers(docker_engine, docker_labels) == []
    assert second.reap_orphan(handle.ident) is False


def test_cleanup_terminal_removes_containers_of_finished_runs_only(
        make_runner: MakeRunner, docker_engine: Any, docker_labels: dict[str, str], tmp_path: Path) -> None:
    first = make_runner()
    runs = {name: first.start(name, job("echo up", "while true; do sleep 0.1; done"), tmp_path / f"{name}.log")
            for name in ("done", "active")}
    kept = first.start("kept", job("true", autoRemove=False), tmp_path / "kept.log")
    assert kept.wait(30) == 0
    wait_for(lambda: all("up" in output(tmp_path / f"{n}.log") for n in runs), what="both jobs to start")
    first.close()
    touched = make_runner().cleanup_terminal(lambda run_id: run_id in {"done", "kept"})
    assert touched == [parse_ident(runs["done"].ident)]
    left = {c.attrs["Labels"]["orchestra.run-id"] for c in labelled_containers(docker_engine, docker_labels)}
    assert left == {"active", "kept"}
