"""Starting a job's process: posix_spawn (which does not hold the interpreter lock while
the child starts) and the Popen fallback make the same child.

Real processes. The child describes itself from /proc; each test runs with
both ways of starting it and expects the same description.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.runners import spawn as spawn_module
from orchestra.runners.spawn import Child, spawn

DESCRIBE = """
import json, os
print(json.dumps({
    "cwd": os.getcwd(), "env": dict(os.environ), "sid": os.getsid(0), "pid": os.getpid(),
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "stdin": os.readlink("/proc/self/fd/0"),
}), flush=True)
os.write(2, b"to stderr\\n")
"""


@pytest.fixture(params=["posix_spawn", "Popen"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "Popen":
        monkeypatch.setattr(spawn_module, "_libc", lambda: None)
    elif spawn_module._libc() is None:
        pytest.fail("posix_spawn with addchdir_np and addclosefrom_np is expected on this machine (glibc >= 2.34)")
    yield request.param


def output(child: Child) -> bytes:
    chunks = []
    while chunk := os.read(child.stdout, 65536):
        chunks.append(chunk)
    child.close_stdout()
    return b"".join(chunks)


def test_the_child_is_the_one_popen_would_make(way: str, tmp_path: Path) -> None:
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_w, True)  # an inheritable descriptor of the daemon must not reach the job
    try:
        child = spawn([sys.executable, "-c", DESCRIBE], executable=sys.executable, env={"ONLY": "this"},
                      cwd=str(tmp_path))
        text = output(child)
        assert child.wait() == 0
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    assert child.started_by == way
    described = json.loads(text.splitlines()[0])
    assert described["cwd"] == str(tmp_path)
    assert described["env"].get("ONLY") == "this" and "PATH" not in described["env"]
    assert described["sid"] == described["pid"] == child.pid  # its own session, so its own process group
    assert described["stdin"] == "/dev/null"
    assert described["fds"] == [0, 1, 2, 3]  # 3: the directory listing itself
    assert text.endswith(b"to stderr\n")


def test_the_child_does_not_inherit_the_signals_python_ignores(way: str, tmp_path: Path) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; a job (here sh, not Python) must not: ``yes | head`` would never end."""
    child = spawn(["sh", "-c", "grep SigIgn /proc/$$/status"], executable=shutil.which("sh"), env={},
                  cwd=str(tmp_path))
    ignored = int(output(child).split()[1], 16)
    assert child.wait() == 0
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (number - 1)), number


def test_exit_codes_and_signals_read_as_subprocess_reads_them(way: str, tmp_path: Path) -> None:
    assert spawn(["sh", "-c", "exit 7"], executable=shutil.which("sh"), env={}, cwd=str(tmp_path)).wait() == 7
    killed = spawn(["sh", "-c", "kill -TERM $$"], executable=shutil.which("sh"), env={}, cwd=str(tmp_path))
    assert killed.wait() == -15


def test_what_cannot_start_raises_as_popen_does(way: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        spawn(["nope"], executable=str(tmp_path / "nope"), env={}, cwd=str(tmp_path))
    with pytest.raises(FileNotFoundError) as missing_dir:
        spawn(["true"], executable=shutil.which("true"), env={}, cwd=str(tmp_path / "gone"))
    assert missing_dir.value.filename == str(tmp_path / "gone")
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(PermissionError):
        spawn(["./plain.sh"], executable="./plain.sh", env={}, cwd=str(tmp_path))
