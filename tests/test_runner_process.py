"""The process runner against real processes: launch, environment, logs, stop, orphans.

Nothing is mocked. Jobs are small scripts in ``tests/jobs``; every test kills
what it started in a finalizer (``Jobs.close``), and waits on conditions with
a deadline (``wait_for``), never for time to pass.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from orchestra.runners.base import LaunchError
from orchestra.runners.logs import follow_log, read_log
from orchestra.runners.process import PROCESS_JOB_FIELDS, ProcessHandle, ProcessRunner

REPO = Path(__file__).resolve().parent.parent
JOBS = Path(__file__).resolve().parent / "jobs"
PY = sys.executable
NO_SHELL = "jobs never run through a shell"
TRUNCATION_NOTE = "[orchestra] log truncated at {} bytes; further output discarded\n"


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def is_gone(pid: int) -> bool:
    """Dead or a zombie: this container's PID 1 does not reap orphans, so zombies stay."""
    state = proc_state(pid)
    return state is None or state[0] in "ZXx"


def group_is_gone(pgid: int) -> bool:
    """No live process is left in the process group (the kernel delivers SIGKILL asynchronously)."""
    for name in os.listdir("/proc"):
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes() if name.isdigit() else b""
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split() if raw else []
        if fields and int(fields[2]) == pgid and fields[0].decode() not in "ZXx":
            return False
    return True


@dataclass
class Started:
    handle: ProcessHandle
    log: Path

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Jobs:
    """Starts jobs in a temporary spec directory and kills every leftover at the end."""

    def __init__(self, base: Path, **runner_options: Any) -> None:
        self.base = base
        self.runner = ProcessRunner(base, **runner_options)
        self._handles: list[ProcessHandle] = []
        self._strays: list[tuple[int, int]] = []
        self._count = 0

    def start(self, command: list[str], *, run_id: str | None = None, **fields: Any) -> Started:
        self._count += 1
        log = self.base / "logs" / f"run-{self._count}.log"
        handle = self.runner.start(run_id or f"run-{self._count}", {"command": command, **fields}, log)
        self._handles.append(handle)
        return Started(handle, log)

    def adopt(self, pid: int) -> int:
        """Remember a process the job spawned, to kill it at the end if it survived."""
        state = proc_state(pid)
        if state is not None:
            self._strays.append((pid, state[1]))
        return pid

    def close(self) -> None:
        for handle in self._handles:
            handle.kill()
            handle.wait(10)
        for pid, start_time in self._strays:
            state = proc_state(pid)
            if state is not None and state[1] == start_time:  # the same process, not a recycled PID
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_jobs(tmp_path: Path) -> Iterator[Callable[..., Jobs]]:
    made: list[Jobs] = []

    def make(**runner_options: Any) -> Jobs:
        made.append(Jobs(tmp_path, **runner_options))
        return made[-1]

    yield make
    for jobs in made:
        jobs.close()


@pytest.fixture
def jobs(make_jobs: Callable[..., Jobs]) -> Jobs:
    return make_jobs()


# --- exit codes and launch ---------------------------------------------------


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_reported(make_jobs: Callable[..., Jobs], use_pidfd: bool, code: int) -> None:
    run = make_jobs(use_pidfd=use_pidfd).start(["sh", "-c", f"echo bye; exit {code}"])
    assert run.handle.wait(10) == code
    assert run.handle.poll() == code
    assert run.text() == "bye\n"


def test_running_job_polls_none_and_wait_times_out(jobs: Jobs, tmp_path: Path) -> None:
    run = jobs.start([PY, "-u", str(JOBS / "chatty.py"), str(tmp_path / "flag")])
    assert run.handle.poll() is None
    assert run.handle.wait(0.05) is None
    (tmp_path / "flag").touch()
    assert run.handle.wait(10) == 0


def test_ident_names_the_process_group_leader(jobs: Jobs) -> None:
    run = jobs.start(["sh", "-c", "exit 0"])
    kind, pid, start_time, boot_id = run.handle.ident.split(":")
    assert (kind, int(pid)) == ("pid", run.handle.pid)
    assert int(start_time) > 0 and boot_id
    run.handle.wait(10)


def test_job_reads_dev_null_and_leads_its_own_session(jobs: Jobs) -> None:
    run = jobs.start(["sh", "-c", "cat; ps -o sid= -o pgid= -p $$"])  # cat ends at once on /dev/null
    assert run.handle.wait(10) == 0
    assert [int(n) for n in run.text().split()] == [run.handle.pid, run.handle.pid]


def test_env_overlays_the_daemon_environment(jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEMON_ONLY", "from-daemon")
    monkeypatch.setenv("LOG_LEVEL", "info")
    names = "DAEMON_ONLY,LOG_LEVEL,ORCHESTRA_RUN_ID,ORCHESTRA_PARAMETERS,ORCHESTRA_PARAM_REGION"
    env = {
        "ORCHESTRA_SHOW": names,
        "LOG_LEVEL": "debug",
        "ORCHESTRA_PARAMETERS": json.dumps({"region": "eu"}),
        "ORCHESTRA_PARAM_REGION": "eu",
    }
    run = jobs.start([PY, str(JOBS / "show.py")], env=env)
    assert run.handle.wait(10) == 0
    assert json.loads(run.text())["env"] == {
        "DAEMON_ONLY": "from-daemon",
        "LOG_LEVEL": "debug",
        "ORCHESTRA_RUN_ID": "run-1",
        "ORCHESTRA_PARAMETERS": '{"region": "eu"}',
        "ORCHESTRA_PARAM_REGION": "eu",
    }


def test_shell_metacharacters_reach_the_child_as_literal_text(jobs: Jobs, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    args = [f"; rm -rf {victim}", "$(touch pwned1)", "`touch pwned2`", "| touch pwned3", "&& touch pwned4"]
    args += ["$HOME", "*", "> pwned5"]
    run = jobs.start([PY, str(JOBS / "show.py"), *args])
    assert run.handle.wait(10) == 0
    assert json.loads(run.text())["argv"] == args
    assert victim.is_dir()
    assert not list(tmp_path.glob("pwned*"))


def test_working_dir_is_relative_to_the_base_dir(jobs: Jobs, tmp_path: Path) -> None:
    (tmp_path / "flows" / "daily").mkdir(parents=True)
    run = jobs.start([PY, str(JOBS / "show.py")], workingDir="flows/daily")
    assert run.handle.wait(10) == 0
    assert json.loads(run.text())["cwd"] == str(tmp_path / "flows" / "daily")


def test_working_dir_may_be_absolute(jobs: Jobs, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = jobs.start([PY, str(JOBS / "show.py")], workingDir=str(elsewhere))
    assert run.handle.wait(10) == 0
    assert json.loads(run.text())["cwd"] == str(elsewhere)


def test_relative_executable_resolves_in_the_working_dir(jobs: Jobs, tmp_path: Path) -> None:
    script = tmp_path / "sub" / "hello.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho hello from script\n")
    script.chmod(0o755)
    run = jobs.start(["./hello.sh"], workingDir="sub")
    assert run.handle.wait(10) == 0
    assert run.text() == "hello from script\n"


def tool(directory: Path, says: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "orchestra-test-tool"
    script.write_text(f"#!/bin/sh\necho {says}\n")
    script.chmod(0o755)


def test_a_command_found_on_the_path_is_found_again_after_it_moved(jobs: Jobs, tmp_path: Path) -> None:
    """Where a name resolves is remembered for a while; a program removed since is searched again."""
    first, second = tmp_path / "first", tmp_path / "second"
    tool(first, "first")
    second.mkdir()
    path = f"{first}{os.pathsep}{second}{os.pathsep}/usr/bin{os.pathsep}/bin"
    run = jobs.start(["orchestra-test-tool"], env={"PATH": path})
    assert run.handle.wait(10) == 0 and run.text() == "first\n"
    (first / "orchestra-test-tool").unlink()
    tool(second, "second")
    run = jobs.start(["orchestra-test-tool"], env={"PATH": path})
    assert run.handle.wait(10) == 0 and run.text() == "second\n"
    (second / "orchestra-test-tool").unlink()
    with pytest.raises(LaunchError, match="executable 'orchestra-test-tool' not found on PATH"):
        jobs.start(["orchestra-test-tool"], env={"PATH": path})


def test_a_relative_directory_on_the_path_is_searched_from_the_working_dir(jobs: Jobs, tmp_path: Path) -> None:
    tool(tmp_path / "sub" / "bin", "relative")
    path = f"bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    run = jobs.start(["orchestra-test-tool"], env={"PATH": path}, workingDir="sub")
    assert run.handle.wait(10) == 0 and run.text() == "relative\n"


def test_missing_executable_is_a_launch_error(jobs: Jobs) -> None:
    with pytest.raises(LaunchError, match="executable 'no-such-tool-xyz' not found on PATH"):
        jobs.start(["no-such-tool-xyz", "--flag"])


def test_missing_relative_executable_names_the_directory(jobs: Jobs, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=f"executable './nope.sh' not found .*{tmp_path}"):
        jobs.start(["./nope.sh"])


def test_non_executable_file_is_permission_denied(jobs: Jobs, tmp_path: Path) -> None:
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(LaunchError, match="permission denied running './plain.sh'.*is it executable"):
        jobs.start(["./plain.sh"])


def test_missing_interpreter_is_named(jobs: Jobs, tmp_path: Path) -> None:
    script = tmp_path / "odd.sh"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(LaunchError, match="interpreter"):
        jobs.start(["./odd.sh"])


def test_missing_working_dir_is_a_launch_error(jobs: Jobs, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=f"working directory 'absent' does not exist .*{tmp_path / 'absent'}"):
        jobs.start(["true"], workingDir="absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(LaunchError, match="working directory 'file' is not a directory"):
        jobs.start(["true"], workingDir="file")


def test_invalid_job_is_refused_before_launch(jobs: Jobs) -> None:
    with pytest.raises(LaunchError, match=r"invalid process job: command: must be a list of strings \(argv\)"):
        jobs.start("echo hi")  # type: ignore[arg-type]


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "problems"),
    [
        ({"command": ["echo", "hi"]}, []),
        (
            {
                "command": ["echo"],
                "env": {"A": "1"},
                "workingDir": ".",
                "terminationGracePeriod": "PT30S",
                "logMaxBytes": 1024,
            },
            [],
        ),
        ({"command": ["echo"], "env": None, "workingDir": None}, []),
        ({}, ["command: must be a non-empty list of strings, got null"]),
        ({"command": []}, ["command: must be a non-empty list of strings, got array"]),
        ({"command": "echo hi"}, [f"command: must be a list of strings (argv), not one string: {NO_SHELL}"]),
        (
            {"command": ["echo", 3, None]},
            ["command[1]: must be a string, got integer", "command[2]: must be a string, got null"],
        ),
        ({"command": ["", "x"]}, ["command[0]: the executable must not be empty"]),
        ({"command": ["echo", "a\0b"]}, ["command[1]: contains a NUL character"]),
        (
            {"command": ["echo"], "env": {"PORT": 80}},
            ["env.PORT: must be a string, got integer (quote the value in YAML)"],
        ),
        ({"command": ["echo"], "env": {"A=B": "x"}}, ["env: 'A=B' is not a valid variable name"]),
        ({"command": ["echo"], "env": ["A"]}, ["env: must be an object of strings, got array"]),
        ({"command": ["echo"], "workingDir": 7}, ["workingDir: must be a string, got integer"]),
        ({"command": ["echo"], "logMaxBytes": 0}, ["logMaxBytes: must be a positive integer, got 0"]),
        ({"command": ["echo"], "logMaxBytes": True}, ["logMaxBytes: must be a positive integer, got True"]),
        (
            {"command": ["echo"], "workdir": "."},
            [f"workdir: unknown field (a process job takes {', '.join(PROCESS_JOB_FIELDS)})"],
        ),
        ([], ["job: must be an object, got array"]),
    ],
)
def test_validate_job(jobs: Jobs, job: Any, problems: list[str]) -> None:
    assert jobs.runner.validate_job(job) == problems


@pytest.mark.parametrize("grace", ["soon", "-5s", 0, True])
def test_validate_job_refuses_bad_grace_periods(jobs: Jobs, grace: Any) -> None:
    (problem,) = jobs.runner.validate_job({"command": ["echo"], "terminationGracePeriod": grace})
    assert problem.startswith("terminationGracePeriod: ")


# --- logs ---------------------------------------------------------------------------


def test_log_merges_stdout_and_stderr_in_order_and_is_readable_while_running(jobs: Jobs, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    run = jobs.start([PY, "-u", str(JOBS / "chatty.py"), str(flag)])
    expected = "out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\n"
    wait_for(lambda: run.text() == expected, what="the first lines in the log")
    assert run.handle.poll() is None
    flag.touch()
    assert run.handle.wait(10) == 0
    assert run.text() == expected + "done\n"


def test_log_is_truncated_and_the_child_never_blocks(jobs: Jobs) -> None:
    run = jobs.start([PY, str(JOBS / "flood.py"), str(2_000_000)], logMaxBytes=1000)
    assert run.handle.wait(30) == 0
    data = run.log.read_bytes()
    assert data.startswith(b"line 00000000 ")
    first = data[:1000]
    assert data == first + b"\n" + TRUNCATION_NOTE.format(1000).encode()


def test_log_truncation_at_a_line_boundary_adds_no_blank_line(jobs: Jobs) -> None:
    run = jobs.start(["printf", "12345\n67890\n"], logMaxBytes=6)
    assert run.handle.wait(10) == 0
    assert run.text() == "12345\n" + TRUNCATION_NOTE.format(6)


def test_a_second_attempt_appends_to_the_same_log(jobs: Jobs, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "shared.log"
    for word in ("first", "second"):
        handle = jobs.runner.start("r", {"command": ["echo", word]}, log)
        assert handle.wait(10) == 0
    assert log.read_text() == "first\nsecond\n"


def test_read_log_pages_by_offset(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    assert read_log(log, 5) == (b"", 5)  # not started yet: empty, not an error
    log.write_bytes(b"hello world\n")
    assert read_log(log) == (b"hello world\n", 12)
    assert read_log(log, 6, limit=3) == (b"wor", 9)
    assert read_log(log, 12) == (b"", 12)


def test_follow_log_yields_everything_until_the_run_ends(jobs: Jobs, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    run = jobs.start([PY, "-u", str(JOBS / "chatty.py"), str(flag)])
    received: list[bytes] = []
    follower = threading.Thread(
        target=lambda: received.extend(follow_log(run.log, 0, lambda: run.handle.poll() is not None, 0.01))
    )
    follower.start()
    wait_for(lambda: b"err 2" in b"".join(received), what="follow_log to see live output")
    flag.touch()
    follower.join(10)
    assert not follower.is_alive()
    assert b"".join(received) == run.log.read_bytes()
    assert b"".join(received).endswith(b"done\n")


def test_a_log_that_cannot_be_written_does_not_stop_the_job(jobs: Jobs) -> None:
    handle = jobs.runner.start("r", {"command": [PY, str(JOBS / "flood.py"), str(500_000)]}, Path("/dev/full"))
    assert handle.wait(30) == 0


# --- stopping ----------------------------------------------------------------------------


def test_terminate_stops_a_job_by_sigterm(jobs: Jobs) -> None:
    run = jobs.start([PY, str(JOBS / "sigterm.py"), "default"])
    wait_for(lambda: "ready\n" in run.text(), what="the job to be ready")
    assert run.handle.terminate(grace=10) == -signal.SIGTERM


def test_terminate_lets_a_job_clean_up_within_the_grace(jobs: Jobs) -> None:
    run = jobs.start([PY, str(JOBS / "sigterm.py"), "handle"])
    wait_for(lambda: "ready\n" in run.text(), what="the job to be ready")
    assert run.handle.terminate(grace=10) == 0
    assert run.text() == "ready\ncleaning up\n"


def test_terminate_kills_a_job_that_ignores_sigterm_after_the_grace(jobs: Jobs) -> None:
    run = jobs.start([PY, str(JOBS / "sigterm.py"), "ignore"], terminationGracePeriod="1s")
    wait_for(lambda: "ready\n" in run.text(), what="the job to be ready")
    began = time.monotonic()
    assert run.handle.terminate() == -signal.SIGKILL  # grace from the job: 1s
    assert 0.9 <= time.monotonic() - began < 8


def test_terminate_of_a_finished_job_returns_its_code(jobs: Jobs) -> None:
    run = jobs.start(["sh", "-c", "exit 4"])
    assert run.handle.wait(10) == 4
    assert run.handle.terminate(grace=0.1) == 4
    run.handle.kill()  # harmless once finished


def test_kill_stops_at_once(jobs: Jobs) -> None:
    run = jobs.start([PY, str(JOBS / "sigterm.py"), "ignore"])
    wait_for(lambda: "ready\n" in run.text(), what="the job to be ready")
    run.handle.kill()
    assert run.handle.wait(10) == -signal.SIGKILL


# --- process groups ------------------------------------------------------------------------


def test_terminate_takes_background_children_along(jobs: Jobs) -> None:
    run = jobs.start(["sh", "-c", "sleep 300 & echo $!; wait"])
    child = jobs.adopt(int(wait_for(lambda: run.text().strip(), what="the child's pid")))
    assert not is_gone(child)
    assert run.handle.terminate(grace=10) == -signal.SIGTERM
    wait_for(lambda: is_gone(child), what="the background child to die")


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
@pytest.mark.parametrize("redirect", ["", " >/dev/null 2>&1"], ids=["holding-pipe", "detached-output"])
def test_children_left_behind_by_an_exiting_job_are_killed(
    make_jobs: Callable[..., Jobs], use_pidfd: bool, redirect: str
) -> None:
    run = make_jobs(use_pidfd=use_pidfd).start(["sh", "-c", f"sleep 300{redirect} & echo $!"])
    assert run.handle.wait(10) == 0  # does not hang on the pipe the child holds
    child = int(run.text().strip())
    wait_for(lambda: is_gone(child), what="the background child to die")


def test_a_process_escaping_the_group_does_not_hang_the_run(make_jobs: Callable[..., Jobs]) -> None:
    jobs = make_jobs(drain_grace=0.2)
    run = jobs.start([PY, str(JOBS / "escape.py")])
    assert run.handle.wait(10) == 0
    child = jobs.adopt(int(run.text().split("\n")[0]))
    assert run.text().endswith(
        "[orchestra] output pipe still held open by a process outside the job; stopped reading\n"
    )
    assert not is_gone(child)  # out of the group: the note says so, and the run ends
    wait_for(lambda: is_gone(child), timeout=15, what="the escaped process to be killed by its run id")


def test_a_daemonized_process_is_killed_after_its_job_ends(jobs: Jobs) -> None:
    """A double fork with ``setsid``, stdio to /dev/null: nothing holds the pipe, nothing is in the group."""
    run = jobs.start([PY, str(JOBS / "daemonize.py")])
    assert run.handle.wait(10) == 0
    escaped = jobs.adopt(int(run.text().strip()))
    assert not run.text().count("[orchestra] output pipe")  # nothing held the pipe
    wait_for(lambda: is_gone(escaped), timeout=15, what="the daemonized process to be killed")


def test_a_later_attempt_of_the_same_run_and_its_own_escapee_are_spared(jobs: Jobs) -> None:
    escape = ["sh", "-c", f"{PY} {JOBS / 'daemonize.py'} && exec sleep 300"]
    first = jobs.start(escape, run_id="same-run")
    first_escaped = jobs.adopt(int(wait_for(lambda: first.text().strip(), what="the first escapee's pid")))
    first.handle.kill()
    assert first.handle.wait(10) == -signal.SIGKILL
    time.sleep(0.05)  # the next attempt starts at least one clock tick (10 ms) after this one ended
    second = jobs.start(escape, run_id="same-run")  # a retry, while the first one's leftovers are looked for
    second_escaped = jobs.adopt(int(wait_for(lambda: second.text().strip(), what="the second escapee's pid")))
    wait_for(lambda: is_gone(first_escaped), timeout=15, what="the first attempt's escapee to be killed")
    time.sleep(1.5)  # the second look for the first attempt's leftovers (1 s later) spares them too
    assert not is_gone(second_escaped) and second.handle.poll() is None
    second.handle.kill()
    wait_for(lambda: is_gone(second_escaped), timeout=15, what="the second attempt's escapee, once it ended")


def test_two_hundred_concurrent_runs_share_one_thread(jobs: Jobs) -> None:
    threads_before = threading.active_count()
    runs = [jobs.start(["sh", "-c", 'echo "run $0"; exit $(($0 % 3))', str(i)]) for i in range(200)]
    assert threading.active_count() - threads_before <= 1
    assert [run.handle.wait(30) for run in runs] == [i % 3 for i in range(200)]
    assert [run.text() for run in runs] == [f"run {i}\n" for i in range(200)]


# --- orphans after a daemon crash -----------------------------------------------------------


@dataclass
class Orphan:
    ident: str
    pid: int
    child: int


@pytest.fixture
def orphan_maker(tmp_path: Path, jobs: Jobs) -> Iterator[Callable[[str], Orphan]]:
    """Starts ``tests/jobs/orphan_maker.py``: a 'daemon' that starts a job, then dies."""
    made: list[Orphan] = []
    helpers: list[subprocess.Popen[str]] = []

    def make(mode: str) -> Orphan:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = tmp_path / f"orphan-{len(made)}" / "run.log"
        helper = subprocess.Popen(
            [PY, str(JOBS / "orphan_maker.py"), str(log), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        helpers.append(helper)
        assert helper.stdout is not None
        made.append(Orphan(**json.loads(helper.stdout.readline())))
        if mode == "hang":
            helper.kill()
        helper.wait(10)
        return made[-1]

    yield make
    for orphan in made:
        jobs.runner.reap_orphan(orphan.ident)  # the one safe way to kill a group we no longer own
    for helper in helpers:
        helper.kill()
        helper.wait(10)
        assert helper.stdin is not None and helper.stdout is not None
        helper.stdin.close()
        helper.stdout.close()


@pytest.mark.parametrize("mode", ["exit", "hang"], ids=["daemon-exited", "daemon-killed"])
def test_reap_orphan_kills_the_group_a_dead_daemon_left(
    jobs: Jobs, orphan_maker: Callable[[str], Orphan], mode: str
) -> None:
    orphan = orphan_maker(mode)
    assert not is_gone(orphan.pid) and not is_gone(orphan.child)
    assert jobs.runner.reap_orphan(orphan.ident) is True
    wait_for(lambda: group_is_gone(orphan.pid), what="the orphaned group to die")
    assert is_gone(orphan.pid) and is_gone(orphan.child)
    assert jobs.runner.reap_orphan(orphan.ident) is False  # nothing left to reap


def test_reap_orphan_finds_survivors_of_a_dead_leader(jobs: Jobs, orphan_maker: Callable[[str], Orphan]) -> None:
    orphan = orphan_maker("exit")
    os.kill(orphan.pid, signal.SIGKILL)
    wait_for(lambda: is_gone(orphan.pid), what="the leader to die")
    assert not is_gone(orphan.child)
    assert jobs.runner.reap_orphan(orphan.ident) is True
    wait_for(lambda: is_gone(orphan.child), what="the surviving child to die")


def test_a_job_never_recorded_is_found_by_its_run_id_with_its_children(jobs: Jobs, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex  # unique, as run ids are: no other test's job can carry it
    handle = jobs.runner.start(run_id, {"command": ["sh", "-c", "sleep 60 & echo $!; wait"]}, tmp_path / "u.log")
    jobs._handles.append(handle)
    wait_for(lambda: (tmp_path / "u.log").read_text().strip().isdigit(), what="the child's pid")
    child = jobs.adopt(int((tmp_path / "u.log").read_text().strip()))
    assert jobs.runner.reap_unrecorded(uuid.uuid4().hex) is False  # another run's id: nothing
    assert jobs.runner.reap_unrecorded(run_id) is True
    assert handle.wait(10) == -signal.SIGKILL
    wait_for(lambda: is_gone(child), what="the job's child killed with it")
    assert jobs.runner.reap_unrecorded(run_id) is False  # nothing left


def test_reap_orphan_leaves_a_finished_run_alone(jobs: Jobs) -> None:
    run = jobs.start(["true"])
    assert run.handle.wait(10) == 0
    assert jobs.runner.reap_orphan(run.handle.ident) is False


def test_reap_orphan_refuses_a_recycled_pid(jobs: Jobs, tmp_path: Path) -> None:
    run = jobs.start([PY, "-u", str(JOBS / "chatty.py"), str(tmp_path / "flag")])
    kind, pid, start_time, boot_id = run.handle.ident.split(":")
    assert jobs.runner.reap_orphan(f"{kind}:{pid}:{int(start_time) + 1}:{boot_id}") is False
    assert jobs.runner.reap_orphan(f"{kind}:{pid}:{start_time}:another-boot") is False
    assert run.handle.poll() is None  # untouched
    (tmp_path / "flag").touch()
    assert run.handle.wait(10) == 0


def test_reap_orphan_rejects_a_foreign_ident(jobs: Jobs) -> None:
    with pytest.raises(ValueError, match="not a process runner ident"):
        jobs.runner.reap_orphan("docker:0123abcd")


# --- a busy worker's thread does the pump's work -----------------------------


def _record_thread(started: Started) -> list[int]:
    """The threads that ran the job's done callback: whoever reaped it and completed its log."""
    threads: list[int] = []
    started.handle.add_done_callback(lambda: threads.append(threading.get_ident()))
    return threads


def test_an_attending_thread_reaps_the_ended_jobs_and_completes_their_logs_itself(jobs: Jobs) -> None:
    """While a worker's loop attends at each pass, the jobs that end are reaped and their output
    logged in that thread: the pump's own thread stays parked, off the interpreter lock."""
    started = [jobs.start([PY, "-c", f"import time; time.sleep(0.3); print('job {i}')"]) for i in range(3)]
    threads = [_record_thread(s) for s in started]
    try:
        deadline = time.monotonic() + 20
        while not all(threads) and time.monotonic() < deadline:  # the worker's passes, a few ms apart
            jobs.runner.attend()
            time.sleep(0.005)
        assert threads == [[threading.get_ident()]] * 3
        assert [s.handle.poll() for s in started] == [0, 0, 0]
        assert [s.text() for s in started] == [f"job {i}\n" for i in range(3)]
    finally:
        jobs.runner.rest()


def test_after_rest_the_pump_thread_follows_the_jobs_again(jobs: Jobs) -> None:
    started = jobs.start([PY, "-c", "import time; time.sleep(0.3); print('late')"])
    threads = _record_thread(started)
    jobs.runner.attend()
    jobs.runner.rest()  # the worker's loop goes to sleep
    assert started.handle.wait(20) == 0
    assert threads and threads[0] != threading.get_ident()
    assert started.text() == "late\n"


def test_a_loop_that_attends_and_then_blocks_holds_no_job_up(jobs: Jobs) -> None:
    """A worker blocked in something else after attending, without resting: the pump's thread
    takes the work back by itself (after PARK_LIMIT), so a wait for a job never hangs."""
    started = jobs.start([PY, "-c", "import time; time.sleep(0.2); print('done')"])
    threads = _record_thread(started)
    jobs.runner.attend()
    try:
        assert started.handle.wait(20) == 0
        assert threads and threads[0] != threading.get_ident()
        assert started.text() == "done\n"
    finally:
        jobs.runner.rest()
