"""Jobs made ahead and held (``ProcessRunner.hold``): a burst's jobs are made while
the worker waits for them to fall due, each waiting in a fixed shell script for one
line on a pipe, and at the due time released with one write. Once released the job
must be the very process ``start`` would have made (argv, environment, directory,
descriptors, signals, session), its arguments are never read by the shell, and a
held job that is dropped, or whose daemon dies, never runs.

Real processes; the job describes itself from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestra.runners import spawn as spawn_module
from orchestra.runners.process import HeldJob, ProcessHandle, ProcessRunner
from orchestra.workers import holding

DESCRIBE = """
import json, os, sys
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "sid": os.getsid(0), "pid": os.getpid(),
    "pgid": os.getpgid(0), "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "stdin": os.readlink("/proc/self/fd/0"),
    "signals": {key: status[key].strip() for key in ("SigBlk", "SigIgn")},
    "cpus": status["Cpus_allowed_list"].strip(),
}), flush=True)
"""


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[ProcessRunner]:
    if spawn_module._libc() is None:
        pytest.fail("posix_spawn with addchdir_np and addclosefrom_np is expected on this machine (glibc >= 2.34)")
    yield ProcessRunner(tmp_path)


@pytest.fixture
def held_jobs() -> Iterator[list[HeldJob]]:
    """Held jobs a test made; any not released are dropped at the end."""
    made: list[HeldJob] = []
    yield made
    for held in made:
        held.drop()


def hold(runner: ProcessRunner, made: list[HeldJob], job: dict[str, Any], run_id: str = "r1") -> HeldJob:
    held = runner.hold(run_id, job)
    assert held is not None, "the job was expected to be held"
    made.append(held)
    return held


def finished(handle: ProcessHandle) -> int:
    code = handle.wait(30)
    assert code is not None, "the job did not end within 30 s"
    return code


def described(log: Path) -> dict[str, Any]:
    return json.loads(log.read_text().splitlines()[-1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("pwd", [None, "/somewhere/else", ""], ids=["no PWD", "a PWD", "an empty PWD"])
def test_a_released_job_is_the_process_start_would_make(runner: ProcessRunner, held_jobs: list[HeldJob],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        pwd: str | None) -> None:
    if pwd is None:
        monkeypatch.delenv("PWD", raising=False)
    else:
        monkeypatch.setenv("PWD", pwd)
    runner = ProcessRunner(tmp_path)  # the daemon's environment is read at the first start
    (tmp_path / "work").mkdir()
    job = {"command": [sys.executable, "-c", DESCRIBE, "one", "two words"], "workingDir": "work",
           "env": {"OLDPWD": "/before", "LINENO": "7", "PS4": "+ ", "SHLVL": "3", "_": "x", "EMPTY": ""}}
    direct = runner.start("r1", job, tmp_path / "direct.log")
    assert finished(direct) == 0
    held = hold(runner, held_jobs, job)
    released = runner.start_held(held, tmp_path / "held.log")
    assert finished(released) == 0

    started, waited = described(tmp_path / "direct.log"), described(tmp_path / "held.log")
    assert waited["pid"] == released.pid == waited["sid"] == waited["pgid"]  # a session of its own, as before
    for view in (started, waited):
        del view["pid"], view["sid"], view["pgid"]
    assert waited == started
    assert waited["argv"] == ["-c", "one", "two words"] and waited["cwd"] == str(tmp_path / "work")
    assert waited["env"].get("PWD") == pwd and waited["env"]["OLDPWD"] == "/before"


def test_shell_characters_in_arguments_reach_a_held_job_as_plain_text(runner: ProcessRunner,
                                                                      held_jobs: list[HeldJob],
                                                                      tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    tricky = [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", "$@", "$1", '"', "'", "\n; x",
              "*", "-c", "go", "", "${PWD}", "a\\b"]
    job = {"command": [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *tricky]}
    held = hold(runner, held_jobs, job)
    handle = runner.start_held(held, tmp_path / "held.log")
    assert finished(handle) == 0
    assert json.loads((tmp_path / "held.log").read_text()) == tricky
    assert not marker.exists()


def test_a_held_job_runs_only_once_released(runner: ProcessRunner, held_jobs: list[HeldJob],
                                            tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    held = hold(runner, held_jobs, {"command": ["touch", str(marker)]})
    time.sleep(0.2)  # what the job would have done by now, held or not
    assert not marker.exists() and alive(held.child.pid)
    assert finished(runner.start_held(held, tmp_path / "held.log")) == 0
    assert marker.exists()


def test_a_dropped_held_job_never_runs_and_is_reaped(runner: ProcessRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    held = runner.hold("r1", {"command": ["touch", str(marker)]})
    assert held is not None
    pid = held.child.pid
    held.drop()
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped: not even a zombie is left
    assert not marker.exists()
    with pytest.raises(OSError):
        runner.start_held(held, tmp_path / "held.log")


def test_a_held_job_whose_daemon_dies_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    daemon = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from orchestra.runners.process import ProcessRunner
        held = ProcessRunner(Path({str(tmp_path)!r})).hold("r1", {{"command": ["touch", {str(marker)!r}]}})
        print(held.child.pid, flush=True)
        os._exit(0)  # as a kill -9 would: nothing is closed or dropped on the way out
    """)
    done = subprocess.run([sys.executable, "-c", daemon], capture_output=True, text=True, timeout=60, check=True)
    pid = int(done.stdout)
    assert wait_gone(pid), f"held process {pid} outlived its daemon"
    assert not marker.exists()


def test_the_started_note_comes_before_the_released_jobs_output_on_a_line_of_its_own(
        runner: ProcessRunner, held_jobs: list[HeldJob], tmp_path: Path) -> None:
    log = tmp_path / "held.log"
    log.write_bytes(b"[orchestra] attempt 1 of 2 ended: crashed\npartial output of attempt 1")  # no newline
    held = hold(runner, held_jobs, {"command": ["echo", "attempt 2 says hi"]})
    assert finished(runner.start_held(held, log, "attempt 2 of 2 started at then")) == 0
    assert log.read_text().splitlines()[-3:] == [
        "partial output of attempt 1", "[orchestra] attempt 2 of 2 started at then", "attempt 2 says hi"]


def test_a_released_jobs_ident_names_the_running_job_and_can_find_it_again(runner: ProcessRunner,
                                                                          held_jobs: list[HeldJob],
                                                                          tmp_path: Path) -> None:
    """The ident (pid, start time, boot) is what a restarted daemon finds the job by: read
    while the job was held, it must be the running job's own."""
    held = hold(runner, held_jobs, {"command": ["sleep", "60"]})
    handle = runner.start_held(held, tmp_path / "held.log")
    try:
        kind, pid, start_time, _boot = handle.ident.split(":")
        stat = Path(f"/proc/{handle.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert (kind, int(pid), int(start_time)) == ("pid", handle.pid, int(stat[19]))
        deadline = time.monotonic() + 10
        while Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the released job never exec'd"
            time.sleep(0.01)
        assert ProcessRunner(tmp_path).reap_orphan(handle.ident)  # found by its ident, and killed
        assert finished(handle) == -signal.SIGKILL
    finally:
        handle.kill()


def test_a_held_job_is_stopped_as_any_other(runner: ProcessRunner, held_jobs: list[HeldJob],
                                            tmp_path: Path) -> None:
    held = hold(runner, held_jobs, {"command": ["sleep", "60"], "terminationGracePeriod": "5s"})
    handle = runner.start_held(held, tmp_path / "held.log")
    assert handle.terminate() == -signal.SIGTERM


@pytest.mark.parametrize("env", [{"A.B": "1"}, {"1X": "1"}, {"IFS": ":"}, {"OPTIND": "2"}, {"PPID": "1"}],
                         ids=["a dot", "a leading digit", "IFS", "OPTIND", "PPID"])
def test_a_job_whose_environment_the_shell_would_change_is_not_held(runner: ProcessRunner,
                                                                    env: dict[str, str]) -> None:
    assert runner.hold("r1", {"command": ["true"], "env": env}) is None


def test_a_program_the_kernel_does_not_run_itself_is_not_held_and_fails_as_before(runner: ProcessRunner,
                                                                                    tmp_path: Path) -> None:
    script = tmp_path / "no-shebang"
    script.write_text("touch ran\n")  # a shell would run this as a script; execve refuses it
    script.chmod(0o755)
    assert runner.hold("r1", {"command": [str(script)]}) is None
    assert runner.hold("r1", {"command": ["no-such-program-here"]}) is None
    assert runner.hold("r1", {"command": "true"}) is None  # not a valid job at all
    shebang = tmp_path / "with-shebang"
    shebang.write_text("#!/bin/sh\nexit 3\n")
    shebang.chmod(0o755)
    held = runner.hold("r1", {"command": [str(shebang)]})
    assert held is not None
    assert finished(runner.start_held(held, tmp_path / "held.log")) == 3


def test_a_held_job_whose_holder_was_killed_cannot_be_released(runner: ProcessRunner, tmp_path: Path) -> None:
    held = runner.hold("r1", {"command": ["true"]})
    assert held is not None
    os.kill(held.child.pid, signal.SIGKILL)
    assert wait_gone(held.child.pid)
    with pytest.raises(OSError):
        runner.start_held(held, tmp_path / "held.log")
    assert not Path(f"/proc/{held.child.pid}").exists()  # reaped on the way


@pytest.fixture
def probe_again(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``holding_is_faithful`` asked anew, and its first answer restored afterwards."""
    spawn_module.holding_is_faithful.cache_clear()
    yield
    spawn_module.holding_is_faithful.cache_clear()


def test_this_machines_shell_holds_faithfully(probe_again: None) -> None:
    assert spawn_module.holding_is_faithful()  # Debian's dash: else no job here would ever be held


def test_nothing_is_held_where_the_shell_would_change_the_job(runner: ProcessRunner, probe_again: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bash = "/bin/bash"  # sets SHLVL and _ in what it passes on
    assert os.access(bash, os.X_OK), "bash is part of this machine's base system"
    monkeypatch.setattr(spawn_module, "HOLD_SHELL", bash)
    assert not spawn_module.holding_is_faithful()
    assert runner.hold("r1", {"command": ["true"]}) is None
    monkeypatch.setattr(spawn_module, "HOLD_SHELL", "/no/such/shell")
    spawn_module.holding_is_faithful.cache_clear()
    assert runner.hold("r1", {"command": ["true"]}) is None


def test_a_held_job_keeps_its_output_when_the_pipe_lands_on_descriptor_3(runner: ProcessRunner,
                                                                          held_jobs: list[HeldJob],
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptor 3 is where the holder reads its release line; the job's output pipe may
    get that number in the daemon (a thread closed it meanwhile), and must still be the output."""
    assert spawn_module.holding_is_faithful()  # its probe asked first, with pipes of its own
    real_pipe, calls = os.pipe, []
    try:
        saved = os.dup(3)
    except OSError:
        saved = None

    def pipe() -> tuple[int, int]:
        read_end, write_end = real_pipe()
        calls.append(write_end)
        if len(calls) == 2:  # the output pipe (the release pipe is made first)
            os.dup2(write_end, 3, inheritable=False)
            os.close(write_end)
            return read_end, 3
        return read_end, write_end

    monkeypatch.setattr(spawn_module.os, "pipe", pipe)
    try:
        held = hold(runner, held_jobs, {"command": ["echo", "still here"]})
    finally:
        monkeypatch.setattr(spawn_module.os, "pipe", real_pipe)
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
    assert len(calls) == 2
    assert finished(runner.start_held(held, tmp_path / "held.log")) == 0
    assert (tmp_path / "held.log").read_text() == "still here\n"


@pytest.mark.parametrize(("cgroup", "limit_file", "limit", "budget"), [
    ("0::/box\n", "box/pids.max", "100", 12),
    ("8:pids:/box\n0::/\n", "pids/box/pids.max", "40", 5),
    ("0::/box\n", "box/pids.max", "max", holding.HOLD_LIMIT),
    ("0::/\n", "elsewhere/pids.max", "100", holding.HOLD_LIMIT),
], ids=["cgroup v2", "cgroup v1", "no process limit", "no limit file"])
def test_fewer_jobs_are_held_where_processes_are_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: str,
                                                    limit_file: str, limit: str, budget: int) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text(cgroup)
    (tmp_path / limit_file).parent.mkdir(parents=True)
    (tmp_path / limit_file).write_text(limit + "\n")
    monkeypatch.setattr(holding, "PROC_CGROUP", str(proc))
    monkeypatch.setattr(holding, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(holding, "PROC_MEMINFO", str(_meminfo(tmp_path, available_kib=64 * 1024 * 1024)))
    monkeypatch.setattr(holding.resource, "getrlimit", lambda _: (65536, 65536))
    assert holding.hold_budget() == budget
    monkeypatch.setattr(holding.resource, "getrlimit", lambda _: (1024, 4096))  # two descriptors a held job
    assert holding.hold_budget() == min(budget, 64)


def _meminfo(directory: Path, available_kib: int) -> Path:
    path = directory / "meminfo"
    path.write_text(f"MemTotal:       {2 * available_kib} kB\nMemFree:        1000 kB\n"
                    f"MemAvailable:   {available_kib} kB\nBuffers:        0 kB\n")
    return path


@pytest.mark.parametrize(("cgroup", "files", "available_mib", "budget"), [
    ("0::/\n", {}, 512, 256),  # an eighth of 512 MiB, 256 KiB a held job
    ("0::/box\n", {"box/memory.max": "1073741824", "box/memory.current": "805306368"}, 65536, 128),
    ("4:memory:/box\n0::/\n", {"memory/box/memory.limit_in_bytes": "536870912",
                                 "memory/box/memory.usage_in_bytes": "268435456"}, 65536, 128),
    ("0::/box\n", {"box/memory.max": "max", "box/memory.current": "805306368"}, 65536, holding.HOLD_LIMIT),
], ids=["machine", "cgroup v2", "cgroup v1", "no memory limit"])
def test_fewer_jobs_are_held_where_memory_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: str,
                                                   files: dict[str, str], available_mib: int, budget: int) -> None:
    (tmp_path / "cgroup").write_text(cgroup)
    for name, value in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    monkeypatch.setattr(holding, "PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(holding, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(holding, "PROC_MEMINFO", str(_meminfo(tmp_path, available_kib=available_mib * 1024)))
    monkeypatch.setattr(holding.resource, "getrlimit", lambda _: (65536, 65536))
    assert holding.hold_budget() == budget
