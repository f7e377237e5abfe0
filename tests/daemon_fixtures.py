"""A real ``orchestra daemon`` subprocess for integration tests, and bounded waits.

Tests talk to it the way a user does: through spec files and the CLI/store.
Every daemon started here is ended by its pid in the fixture's finalizer.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from orchestra.store import Store, open_store

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")

POOL = """\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {name: local}
spec: {type: process, concurrencyLimit: 4}
"""


def deployment(name: str, spec: str) -> str:
    lines = "\n".join("  " + line for line in spec.strip().splitlines())
    return f"apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  pool: local\n{lines}\n"


class DaemonProcess:
    def __init__(self, workdir: Path, db_url: str, extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.extra = extra or []
        self.open_files: tuple[int, int] | None = None  # RLIMIT_NOFILE (soft, hard) to start it with
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0
        self.log = workdir / "daemon.log"
        self.env = {**os.environ, "ORCHESTRA_DB": db_url}

    def start(self) -> DaemonProcess:
        self.log_start = self.log.stat().st_size if self.log.exists() else 0  # daemons share the log file
        handle = self.log.open("ab")
        # --port 0: each daemon serves its API on a free port, so that daemons of tests run
        # at the same time (or a daemon already on 4200) never collide.
        self.proc = subprocess.Popen([ORCHESTRA, "daemon", "specs", "--port", "0", *self.extra], cwd=self.workdir,
                                     env=self.env, preexec_fn=self._limit_open_files if self.open_files else None,
                                     stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        return self

    def _limit_open_files(self) -> None:
        """In the child, before ``exec``: the limit a user's shell (``ulimit -n``) would set."""
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def ready(self, timeout: float = 30.0) -> None:
        """Wait until the daemon has started (signal handlers installed, specs applied)."""
        wait_for(lambda: "daemon ready" in self.output()[self.log_start:] or (self.proc and self.proc.poll() is not None),
                 timeout=timeout, message="daemon start")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.ready()
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ORCHESTRA, *args], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "pool.yaml").write_text(POOL)
    return tmp_path


@pytest.fixture
def daemon_factory(workdir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []
    db_url = f"sqlite:///{workdir / 'orchestra.db'}"

    def make(*extra: str) -> DaemonProcess:
        process = DaemonProcess(workdir, db_url, list(extra))
        started.append(process)
        return process

    yield make
    for process in started:
        process.cleanup()


@pytest.fixture
def store(workdir: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{workdir / 'orchestra.db'}")
    yield opened
    opened.close()


def runs_json(process: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    import json

    result = process.cli("get", "runs", "-o", "json", "--limit", "10000", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
