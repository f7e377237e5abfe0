"""A daemon short of open files: its runs wait instead of failing, and its jobs keep the user's limit.

Real daemons started with a low ``RLIMIT_NOFILE`` (as ``ulimit -n`` sets it), real
jobs, the real store. A running process job holds three of the daemon's
descriptors, so at the common soft limit of 1,024 a pool of a few hundred jobs
used to fail its runs with "Too many open files".
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestra.store import Store
from orchestra.workers.capacity import RESERVE, SHORTAGE_HOLD, WARN_EVERY, Capacity
from tests.daemon_fixtures import DaemonProcess, daemon_factory, deployment, runs_json, store, wait_for, workdir

__all__ = ["daemon_factory", "store", "workdir"]  # fixtures used by name below

Factory = Callable[..., DaemonProcess]
LOW = 64  # descriptors: the daemon's own take about 20, each running job 3


def _burst(workdir: Path, count: int, command: str, seconds_ahead: float = 4.0) -> None:
    """``count`` deployments whose runs all fall due at one boundary a few seconds out."""
    boundary = (datetime.now(UTC) + timedelta(seconds=seconds_ahead + 1)).replace(microsecond=0)
    anchor = boundary.isoformat().replace("+00:00", "Z")
    (workdir / "specs" / "pool.yaml").write_text(
        "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process, concurrencyLimit: 100}\n")
    docs = [deployment(f"job-{i}", f"command: {command}\nschedules: [{{interval: 1h, anchor: '{anchor}'}}]")
            for i in range(count)]
    (workdir / "specs" / "jobs.yaml").write_text("---\n".join(docs))


@pytest.mark.timeout(120)
def test_runs_wait_for_room_when_the_daemon_runs_out_of_open_files(
        workdir: Path, daemon_factory: Factory, store: Store) -> None:
    _burst(workdir, 40, '["sleep", "1"]')
    daemon = daemon_factory("--no-api")
    daemon.open_files = (LOW, LOW)  # the hard limit too: the daemon cannot raise its own
    daemon.start()
    daemon.ready()
    wait_for(lambda: len(runs := runs_json(daemon)) == 40 and all(r["state"] == "Completed" for r in runs),
             timeout=60, message="every run completed")

    runs = runs_json(daemon)
    assert {r["attempt"] for r in runs} == {1}, "a run not started spent an attempt"
    put_back = [e for r in runs for e in store.events(r["id"]) if (e.from_state, e.to_state) == ("Pending", "Scheduled")]
    assert put_back, "the limit was never reached: the test proves nothing"
    assert all("short of resources (Too many open files)" in e.reason for e in put_back)
    logs = workdir / ".orchestra" / "logs"  # the run's log says why too, though descriptors ran out
    assert all("[orchestra] not started: this worker is short of resources (Too many open files); the run waits"
               in (logs / f"{e.run_id}.log").read_text() for e in put_back)
    output = daemon.output()
    assert output.count("WARNING orchestra.worker: cannot start more jobs: Too many open files") == 1  # with what to do
    assert "LimitNOFILE=" in output
    assert "reconcile pass failed" not in output
    assert daemon.stop() == 0


@pytest.mark.timeout(60)
def test_the_daemon_raises_its_open_file_limit_to_the_hard_one_and_its_jobs_inherit_it(
        workdir: Path, daemon_factory: Factory) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard != resource.RLIM_INFINITY and hard > 4 * LOW, f"this machine's hard limit ({hard}) leaves nothing to raise"
    _burst(workdir, 3, '["sh", "-c", "ulimit -n"]')  # made ahead and held before the boundary
    daemon = daemon_factory("--no-api")
    daemon.open_files = (LOW, hard)  # a user's shell with the usual soft limit under a higher hard one
    daemon.start()
    daemon.ready()
    assert daemon.proc is not None
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    assert next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3] == str(hard)

    daemon.cli("run", "job-0")  # started at once, not held
    wait_for(lambda: len(runs := runs_json(daemon)) == 4 and all(r["state"] == "Completed" for r in runs),
             timeout=30, message="every run completed")
    for run in runs_json(daemon):  # the same limit whichever way the job started
        logged = daemon.cli("logs", run["id"]).stdout
        assert [line for line in logged.splitlines() if not line.startswith("[orchestra]")] == [str(hard)], logged
    assert daemon.stop() == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_shortage_that_lasts_is_a_warning_every_ten_minutes_not_every_spell(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    capacity = Capacity(clock)
    short = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.INFO, logger="orchestra.worker"):
        for _ in range(3):  # three spells in a row
            capacity.ran_short(running=5, err=short)
            clock.now += SHORTAGE_HOLD
            capacity.room(running=0, wanted=1)  # the spell ends
        clock.now += WARN_EVERY
        capacity.ran_short(running=5, err=short)
    levels = [r.levelname for r in caplog.records if "cannot start more jobs" in r.getMessage()]
    assert levels == ["WARNING", "INFO", "INFO", "WARNING"]


def test_capacity_keeps_to_what_ran_when_a_start_ran_short_then_tries_again() -> None:
    clock = _Clock()
    capacity = Capacity(clock)
    assert capacity.room(running=500, wanted=50) == 50  # no bound before any shortage
    held = _open_descriptors()

    capacity.ran_short(running=12, err=OSError(errno.EMFILE, "Too many open files"))
    assert _open_descriptors() == held - RESERVE  # let go of: the pass that ran short needs some to say so
    assert capacity.room(running=12, wanted=50) == 0
    assert capacity.room(running=10, wanted=50) == 0  # two fewer: descriptors for the worker itself
    assert capacity.room(running=7, wanted=50) == 3  # jobs that ended made room
    assert capacity.room(running=7, wanted=2) == 2

    capacity.ran_short(running=300, err=OSError(errno.EMFILE, "Too many open files"))
    assert capacity.room(running=0, wanted=500) == 270  # a tenth fewer

    clock.now += SHORTAGE_HOLD
    assert capacity.room(running=12, wanted=50) == 50  # the spell is over: the pool's limit again
    assert _open_descriptors() == held  # and the reserve is kept again
