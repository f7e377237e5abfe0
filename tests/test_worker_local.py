"""The daemon's in-process worker against a real SQLite store and real processes.

Time is injected: each test steps the worker at chosen instants (``at(s)``
is T0 + s), and between passes waits for a job to end through the worker's
``on_change``, never for time to pass. Jobs are small commands and the
scripts in ``tests/jobs``; ``World.close`` kills whatever is left.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from worker_fixtures import (  # noqa: F401
    Gate,
    JOBS,
    PY,
    T0,
    TrackingRunner,
    World,
    at,
    dead_pid,
    deployment,
    group_is_gone,
    is_gone,
    pool,
    queue,
    wait_for,
    world_fixture,
)

from orchestra.reconcile.jobs import prepare_job
from orchestra.runners.process import ProcessHandle
from orchestra.store import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    CRASHED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    Run,
)
from orchestra.runners.docker import DockerRunner
from orchestra.workers import LocalWorker
from orchestra.workers import local as local_module
from orchestra.workers.identity import LocalWorkerId, local_worker_alive, worker_identity
from orchestra.workers.outcomes import (
    CANCEL,
    SHUTDOWN,
    TIMEOUT,
    exit_reason,
    finish_outcome,
    grace_seconds,
    retry_reason,
)
from orchestra.workers.recovery import recover_runs
from orchestra.workers.supervision import WaiterPool

DONE = (COMPLETED, FAILED, CRASHED, CANCELLED)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def sigterm_job(mode: str) -> list[str]:
    """tests/jobs/sigterm.py: prints "ready", then reacts to SIGTERM as ``mode`` says."""
    return [PY, "-u", str(JOBS / "sigterm.py"), mode]


@pytest.fixture(autouse=True)
def _pool(world: World) -> None:
    world.apply(pool("local"))


@pytest.fixture
def worker_log() -> Iterator[list[str]]:
    """Lines the worker logs. A handler of our own: the daemon's logging setup, which
    other tests may run in-process, stops ``orchestra`` records from reaching pytest's."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("orchestra.worker")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# -- a run's life -----------------------------------------------------------------------------


def test_a_run_goes_from_scheduled_to_completed_with_its_output_logged(world: World, worker_log: list[str]) -> None:
    world.job("hello", py("print('hello from the job')"))
    run = world.run("hello", max_attempts=2)
    done = world.step_until(world.reached(run, *DONE), at(1), what="the run to finish")
    assert (done.state, done.state_reason, done.exit_code) == (COMPLETED, "exit code 0", 0)
    assert (done.start_time, done.end_time, done.attempt) == (at(1), at(1), 1)
    assert done.runner_ident and done.job["command"] == py("print('hello from the job')")
    assert [(e[0], e[1]) for e in world.reasons(run)] == [
        (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING), (RUNNING, COMPLETED)]
    assert world.log(run).splitlines() == [
        f"[orchestra] attempt 1 of 2 started at {at(1).isoformat()}",
        "hello from the job",
        "[orchestra] attempt 1 of 2 ended: exit code 0",
    ]
    me = world.worker.worker_id
    assert worker_log == [
        f"run {run.id[:12]} hello: Scheduled -> Pending (claimed by {me})",
        f"run {run.id[:12]} hello: Pending -> Running (started by {me})",
        f"run {run.id[:12]} hello: Running -> Completed (exit code 0)",
    ]


def test_a_failing_exit_code_fails_the_run(world: World) -> None:
    world.job("bad", py("import sys; sys.exit(3)"))
    run = world.run("bad")
    done = world.step_until(world.reached(run, *DONE), T0, what="the run to finish")
    assert (done.state, done.state_reason, done.exit_code) == (FAILED, "exit code 3", 3)


def test_a_failed_attempt_is_retried_after_the_delay(world: World) -> None:
    world.job("flaky", py("import sys; print('trying'); sys.exit(1)"))
    run = world.run("flaky", max_attempts=2, retry_delay_seconds=30)
    again = world.step_until(world.reached(run, SCHEDULED, *DONE), at(5), what="the first attempt to end")
    assert (again.state, again.attempt, again.scheduled_time) == (SCHEDULED, 2, at(35))
    assert again.state_reason == "exit code 1; retry 2/2 in 30s"
    assert world.worker.step(at(6)) == at(35)  # not due yet, and the worker knows when it is
    assert world.state(run) == SCHEDULED
    done = world.step_until(world.reached(run, *DONE), at(35), what="the retry to end")
    assert (done.state, done.attempt, done.state_reason) == (FAILED, 2, "exit code 1")
    assert world.log(run).count("trying") == 2
    assert "[orchestra] attempt 2 of 2 started at" in world.log(run)


def test_a_job_past_its_timeout_is_stopped_and_failed(world: World) -> None:
    world.job("slow", sigterm_job("default"))
    run = world.run("slow", timeout_seconds=30, max_attempts=1)
    world.step_until(lambda: "ready" in world.log(run) and world.state(run) == RUNNING, T0, what="the job started and recorded")
    assert world.worker.step(at(10)) == at(11)  # next: the cancel check, before the timeout at 30s
    assert world.state(run) == RUNNING
    done = world.step_until(world.reached(run, *DONE), at(30), what="the timeout to stop the job")
    assert (done.state, done.state_reason, done.exit_code) == (FAILED, "timed out after 30s", -15)
    assert group_is_gone(world.pid(run))


def test_a_timed_out_attempt_is_retried(world: World) -> None:
    world.job("slow", sigterm_job("default"))
    run = world.run("slow", timeout_seconds=5, max_attempts=2)
    world.step_until(lambda: "ready" in world.log(run), T0, what="the job to start")
    world.step_until(lambda: world.store.get_run(run.id).attempt == 2, at(5), what="the retry")
    assert (RUNNING, SCHEDULED, "timed out after 5s; retry 2/2 now") in world.reasons(run)


# -- cancel ---------------------------------------------------------------------------------------


def test_cancelling_a_running_job_stops_its_group_and_cancels_the_run(world: World) -> None:
    world.job("long", sigterm_job("handle"))
    run = world.run("long", max_attempts=3)
    world.step_until(lambda: "ready" in world.log(run) and world.state(run) == RUNNING, T0, what="the job started and recorded")
    world.store.transition(run.id, CANCELLING, "cancel requested by alice", expect={RUNNING})
    started = time.monotonic()
    done = world.step_until(world.reached(run, *DONE), at(1), what="the cancel")
    assert time.monotonic() - started < 5  # the job exits on SIGTERM at once; grace is 10s
    assert (done.state, done.state_reason, done.exit_code) == (CANCELLED, "cancelled by request", 0)
    assert "cleaning up" in world.log(run)
    assert group_is_gone(world.pid(run))


def test_a_job_ignoring_sigterm_is_killed_after_its_grace_period(world: World) -> None:
    world.job("stubborn", sigterm_job("ignore"), jobVariables={"terminationGracePeriod": "1s"})
    run = world.run("stubborn")
    world.step_until(lambda: "ready" in world.log(run) and world.state(run) == RUNNING, T0, what="the job started and recorded")
    world.store.transition(run.id, CANCELLING, "cancel requested", expect={RUNNING})
    started = time.monotonic()
    world.worker.step(at(1))
    assert time.monotonic() - started < 0.5  # the grace period is waited out in a thread
    done = world.step_until(world.reached(run, *DONE), at(1), what="the kill")
    assert 1.0 <= time.monotonic() - started < 6
    assert (done.state, done.exit_code) == (CANCELLED, -9)
    assert group_is_gone(world.pid(run))


def test_a_cancelled_run_whose_job_never_started_is_cancelled(world: World) -> None:
    world.job("hello", py("pass"))
    run = world.run("hello")
    world.store.claim_runs("local", now=T0, worker=world.worker.worker_id, max_count=1)
    world.store.transition(run.id, CANCELLING, "cancel requested", expect={PENDING})
    world.worker.step(T0)
    done = world.store.get_run(run.id)
    assert (done.state, done.state_reason) == (CANCELLED, "cancelled by request")
    assert run.id not in world.runner.handles


class CancelledWhileStarting(TrackingRunner):
    """Plays a cancel that lands between the claim and the Running transition."""

    def __init__(self, world: World) -> None:
        super().__init__(world.tmp)
        self.world = world

    def start(self, run_id: str, job: dict[str, object], log_path: Path, **run: Any) -> ProcessHandle:
        handle = super().start(run_id, job, log_path, **run)
        self.world.store.transition(run_id, CANCELLING, "cancel requested", expect={PENDING})
        return handle


def test_a_cancel_that_lands_while_the_job_starts_stops_the_job(world: World) -> None:
    world.runner.close()
    world.runner = CancelledWhileStarting(world)
    world.worker = world.make_worker()
    world.job("long", sigterm_job("default"))
    run = world.run("long")
    done = world.step_until(world.reached(run, *DONE), T0, what="the cancel")
    assert (done.state, done.state_reason) == (CANCELLED, "cancelled by request")
    assert group_is_gone(world.pid(run))


class ClaimedElsewhileStarting(TrackingRunner):
    """Plays a daemon that recovered the run and claimed it again while our job started."""

    def __init__(self, world: World) -> None:
        super().__init__(world.tmp)
        self.world = world

    def start(self, run_id: str, job: dict[str, object], log_path: Path, **run: Any) -> ProcessHandle:
        handle = super().start(run_id, job, log_path, **run)
        self.world.store.transition(run_id, SCHEDULED, "lease expired", expect={PENDING})
        self.world.store.claim_runs("local", now=T0, worker="remote:elsewhere:1", max_count=1)
        return handle


def test_a_run_claimed_elsewhere_while_the_job_starts_is_left_alone(world: World) -> None:
    world.runner.close()
    world.runner = ClaimedElsewhileStarting(world)
    world.worker = world.make_worker()
    world.job("long", sigterm_job("default"))
    run = world.run("long")
    world.step(T0)
    wait_for(lambda: group_is_gone(world.pid(run)), what="our job to be killed")
    now = world.store.get_run(run.id)
    assert (now.state, now.worker, now.runner_ident) == (PENDING, "remote:elsewhere:1", None)
    assert RUNNING not in [e[1] for e in world.reasons(run)]


# -- starting fails -------------------------------------------------------------------------------


def test_a_job_that_does_not_render_fails_without_retry(world: World) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    world.job("typed", ["echo", "{{ parameters.n }}"], parameterSchema=schema)
    run = world.run("typed", parameters={"n": "many"}, max_attempts=3)
    world.step(T0)
    done = world.store.get_run(run.id)
    assert (done.state, done.attempt) == (FAILED, 1)
    assert done.state_reason.startswith("cannot render the job: parameter n")
    assert done.state_reason in world.log(run)
    assert run.id not in world.runner.handles


def test_a_job_that_cannot_launch_fails_and_is_retried(world: World) -> None:
    world.job("missing", ["/nonexistent/program"])
    run = world.run("missing", max_attempts=2)
    world.step(T0)
    assert world.store.get_run(run.id).attempt == 2  # retried at once: no delay
    world.step(T0)
    done = world.store.get_run(run.id)
    assert (done.state, done.attempt) == (FAILED, 2)
    assert done.state_reason == "cannot start the job: executable '/nonexistent/program' not found " \
                                f"(relative paths start at {world.tmp})"
    assert [e[2] for e in world.reasons(run) if e[1] == SCHEDULED][1].endswith("; retry 2/2 now")


def test_parameters_with_shell_metacharacters_reach_argv_as_plain_text(world: World) -> None:
    nasty = "a; rm -rf / && $(echo x) `id` | cat > f 'q' \"dq\" * ~ \\n"
    world.job("show", [PY, str(JOBS / "show.py"), "{{ parameters.who }}"], parameters={"who": "x"})
    run = world.run("show", parameters={"who": nasty})
    world.step_until(world.reached(run, *DONE), T0, what="the run to finish")
    shown = json.loads(world.log(run).splitlines()[1])
    assert shown["argv"] == [nasty]
    assert not (world.tmp / "f").exists()


# -- dispatch -------------------------------------------------------------------------------------


def test_the_pool_limit_holds_when_many_runs_are_due(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=2))
    world.job("short", ["sleep", "0.2"])
    runs = [world.run("short") for _ in range(6)]
    most: list[int] = []

    def sample() -> None:
        live = sum(1 for h in world.runner.handles.values() if h.poll() is None)
        most.append(max(live, len(world.store.active_runs())))

    world.step_until(lambda: all(world.state(r) == COMPLETED for r in runs), T0, timeout=20,
                     what="every run to finish", each=sample)
    assert max(most) == 2


def test_higher_priority_queues_are_served_first(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=1), queue("urgent", priority=1), queue("bulk", priority=5))
    world.job("work", py("pass"))
    bulk = world.run("work", T0 - timedelta(minutes=10), queue="bulk")
    urgent = world.run("work", T0, queue="urgent")
    world.worker.step(T0)  # one claim: the pool has room for one
    assert (world.state(urgent), world.state(bulk)) == (PENDING, SCHEDULED)
    world.step_until(world.reached(bulk, COMPLETED), at(1), what="the bulk run")
    assert world.store.get_run(urgent.id).start_time == T0


def test_a_worker_serves_only_its_pools_and_types_it_can_run(world: World) -> None:
    world.apply(pool("boxes", type="docker"), pool("other"))
    world.job("here", py("pass"))
    world.apply(deployment("boxed", "boxes"), deployment("there", "other", command=py("pass")))
    here, boxed, there = world.run("here"), world.run("boxed", pool="boxes"), world.run("there", pool="other")
    world.worker = world.make_worker(pools=["other", "boxes", "nowhere"])
    world.step_until(world.reached(there, COMPLETED), T0, what="the run of pool other")
    assert (world.state(here), world.state(boxed)) == (SCHEDULED, SCHEDULED)


def test_step_returns_when_the_next_run_falls_due(world: World) -> None:
    assert world.worker.step(T0) is None
    world.job("later", py("pass"))
    world.run("later", at(60))
    assert world.worker.step(T0) == at(60)


def test_a_pass_records_its_starts_and_ends_and_claims_in_one_write(world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Four jobs end, four more are claimed and start: one write; the next pass records the
    four starts (and the ends of those already over) in one more, not nine."""
    monkeypatch.setattr(local_module, "RECORD_START_WITHIN", 0.0)  # starts not put off: the next pass has them all
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=4))
    world.job("quick", gate.command)
    runs = [world.run("quick") for _ in range(8)]
    world.step(T0)
    first = [r for r in runs if world.state(r) == RUNNING]
    assert len(first) == 4
    gate.open()
    wait_for(lambda: all(world.runner.handles[r.id].poll() is not None for r in first), what="the jobs to end")
    writes = world.writes()
    world.worker.step(at(1))
    assert len(writes) == 1
    assert {world.state(r) for r in first} == {COMPLETED}
    second = [r for r in runs if r not in first]
    assert {world.state(r) for r in second} == {PENDING} and world.worker.starting == 4
    world.worker.step(at(1))
    assert len(writes) == 2
    assert {world.state(r) for r in second} <= {RUNNING, COMPLETED}
    world.step_until(lambda: all(world.state(r) == COMPLETED for r in runs), at(2), what="every run to finish")
    for run in runs:
        assert [(e[0], e[1]) for e in world.reasons(run)] == [
            (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING), (RUNNING, COMPLETED)]


def test_the_worker_renders_jobs_as_orchestra_render_does(world: World) -> None:
    schema = {"type": "object", "properties": {"who": {"type": "string"}, "n": {"type": "integer"}}}
    world.job("greet", ["echo", "{{ parameters.who }}", "{{ parameters.n }}"], parameters={"who": "x", "n": 1},
              parameterSchema=schema, jobVariables={"env": {"A": "1"}})
    run = world.run("greet", T0 - timedelta(minutes=1), parameters={"who": "y"}, job_variables={"env": {"B": "2"}})
    done = world.step_until(world.reached(run, *DONE), T0, what="the run to finish")
    expected = prepare_job(world.store, "greet", parameters={"who": "y"}, job_variables={"env": {"B": "2"}},
                           run_id=run.id, scheduled_time=run.scheduled_time.isoformat(), python=PY).rendered
    assert (done.job, done.variables_patch) == (expected.job, expected.variables_patch)
    assert world.log(run).splitlines()[1] == "y 1"


def test_a_deployment_changed_between_passes_is_rendered_anew(world: World) -> None:
    world.job("show", ["echo", "before"])
    first = world.run("show")
    world.step_until(world.reached(first, COMPLETED), T0, what="the first run")
    world.job("show", ["echo", "after"])
    second = world.run("show")
    world.step_until(world.reached(second, COMPLETED), at(1), what="the second run")
    assert world.log(second).splitlines()[1] == "after"


# -- dead workers ------------------------------------------------------------------------------------


def _running_under(world: World, worker: str, ident: str, **kw: Any) -> Run:
    run = world.run("job", **kw)
    claimed = world.store.claim_runs("local", now=T0, worker=worker, max_count=1)
    assert [r.id for r in claimed] == [run.id]
    return world.store.transition(run.id, RUNNING, "started", runner_ident=ident)


def test_recover_kills_what_a_killed_daemon_left_and_moves_its_runs_on(world: World) -> None:
    world.job("job", ["true"])
    host = socket.gethostname()
    dead = f"local:{host}:{dead_pid()}:12345"
    recycled = f"local:{host}:{os.getpid()}:1"  # our PID, but not our start time: a previous daemon
    retry_orphan, last_orphan = world.orphan(), world.orphan()
    retried = _running_under(world, dead, retry_orphan.ident, max_attempts=2)
    crashed = _running_under(world, dead, last_orphan.ident, max_attempts=1)
    cancelling = _running_under(world, recycled, "pid:1:1:not-this-boot")
    world.store.transition(cancelling.id, CANCELLING, "cancel requested")
    with subprocess.Popen(["sleep", "60"]) as alive:
        try:
            live = LocalWorkerId(host, alive.pid, start_time_of(alive.pid)).format()
            untouched = _running_under(world, live, "pid:1:1:not-this-boot")
            recovered = world.worker.recover(T0)
            assert world.worker.recover(T0) == []  # nothing left to do: idempotent
        finally:
            alive.kill()
    assert sorted(recovered) == sorted([retried.id, crashed.id, cancelling.id])
    orphans = (retry_orphan, last_orphan)
    wait_for(lambda: all(group_is_gone(o.pid) and is_gone(o.child) for o in orphans), what="the orphans to die")
    again = world.store.get_run(retried.id)
    assert (again.state, again.attempt, again.scheduled_time, again.worker) == (SCHEDULED, 2, T0, None)
    assert again.state_reason == f"crashed: worker {dead} gone; retry 2/2"
    assert (world.store.get_run(crashed.id).state_reason) == f"worker {dead} gone; process killed"
    assert world.state(crashed) == CRASHED
    assert world.store.get_run(cancelling.id).state_reason == f"worker {recycled} gone while cancelling"
    assert world.state(untouched) == RUNNING


def test_recover_kills_a_job_whose_start_a_killed_daemon_never_recorded(world: World) -> None:
    """A daemon killed between a job's start and the write recording it left no ident:
    the job is found by the run id in its environment, killed, and the run moves on."""
    gate = Gate(world.tmp)
    world.job("long", gate.printing("started"))  # runs until the gate opens: never, here
    dead = f"local:{socket.gethostname()}:{dead_pid()}:12345"
    run = world.run("long", max_attempts=1)
    world.make_worker(worker_id=dead).step(T0)  # claims and starts it; "dies" before the next pass
    wait_for(lambda: "started" in world.log(run), what="the job running")
    pid = world.pid(run)
    stored = world.store.get_run(run.id)
    assert (stored.state, stored.worker, stored.runner_ident) == (PENDING, dead, None)
    assert world.worker.recover(T0) == [run.id]
    wait_for(lambda: group_is_gone(pid), what="the unrecorded job killed")
    stored = world.store.get_run(run.id)
    assert (stored.state, stored.state_reason) == (CRASHED, f"worker {dead} gone; process killed")


def test_recovery_leaves_a_run_that_moved_on_since_it_was_listed(world: World) -> None:
    world.job("job", ["true"])
    dead = f"local:{socket.gethostname()}:{dead_pid()}:12345"
    orphan = _running_under(world, dead, "pid:1:1:not-this-boot", max_attempts=2)
    listed = world.store.active_runs()
    world.store.transition(orphan.id, SCHEDULED, "recovered by another daemon", attempt=2, scheduled_time=T0)
    world.store.claim_runs("local", now=T0, worker="remote:elsewhere:1", max_count=1)
    assert recover_runs(world.store, {"process": world.runner}, listed, T0) == []
    now = world.store.get_run(orphan.id)
    assert (now.state, now.worker, now.attempt) == (PENDING, "remote:elsewhere:1", 2)


def start_time_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].split()[19].decode()


def test_a_step_recovers_runs_whose_lease_expired(world: World) -> None:
    world.job("job", ["true"])
    stale = _running_under(world, "remote:elsewhere:1", "pid:1:1:not-this-boot", max_attempts=1)
    world.worker.step(at(20))  # the lease (30s from T0) still holds
    assert world.state(stale) == RUNNING
    world.worker.step(at(60))
    done = world.store.get_run(stale.id)
    assert (done.state, done.state_reason) == (CRASHED, "lease of worker remote:elsewhere:1 expired")


def test_leases_are_renewed_and_a_revoked_lease_kills_the_job(world: World) -> None:
    world.job("long", sigterm_job("default"))
    run = world.run("long")
    world.step_until(lambda: "ready" in world.log(run) and world.state(run) == RUNNING, T0, what="the job started and recorded")
    world.worker.step(at(11))
    assert world.store.get_run(run.id).lease_expires_at == at(41)
    world.store.transition(run.id, CRASHED, "recovered by another daemon")
    world.worker.step(at(22))
    wait_for(lambda: group_is_gone(world.pid(run)), what="the job to be killed")
    world.worker.step(at(23))
    assert world.store.get_run(run.id).state_reason == "recovered by another daemon"


# -- shutdown -------------------------------------------------------------------------------------------


def test_a_store_locked_through_the_shutdown_still_has_every_job_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The store cannot be written for the whole shutdown (another process holds the write
    lock): neither the job recorded Running nor the one whose start was never recorded may
    outlive the worker; their runs are left as stored, for recovery to take back."""
    import sqlite3

    from orchestra.store import engine as engine_module

    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(local_module, "RECORD_START_WITHIN", 0.0)  # the next pass records the start: the write locked out
    world = World(tmp_path)
    try:
        world.job("long", ["sleep", "60"])
        recorded = world.run("long")
        world.step_until(world.reached(recorded, RUNNING), T0, what="the first job recorded Running")
        unrecorded = world.run("long")
        world.woke.clear()
        world.worker.step(T0)  # claims and starts it; the next pass would record the start
        assert world.woke.wait(10), "the start was never handed over"
        locker = sqlite3.connect(tmp_path / "orchestra.db", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # held through the whole shutdown
            with caplog.at_level(logging.WARNING, logger="orchestra.worker"):
                world.worker.shutdown(0.5, lambda: at(5))
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert group_is_gone(world.pid(recorded)) and group_is_gone(world.pid(unrecorded))
        assert (world.state(recorded), world.state(unrecorded)) == (RUNNING, PENDING)  # as stored: for recovery
        said = caplog.text
        assert "cannot record while stopping" in said
        assert f"run {recorded.id[:12]} long: cannot report that its job ended" in said
        assert f"run {unrecorded.id[:12]} long: cannot report that its job ended" in said
    finally:
        world.close()



def test_shutdown_lets_short_jobs_finish_and_cancels_long_ones(world: World) -> None:
    world.job("short", ["sleep", "0.3"])
    world.job("long", sigterm_job("default"))
    short, long = world.run("short", max_attempts=3), world.run("long", max_attempts=3)
    world.step_until(lambda: "ready" in world.log(long), T0, what="the jobs to start")
    started = time.monotonic()
    world.worker.shutdown(1.0, lambda: at(5))
    assert time.monotonic() - started < 5
    assert (world.state(short), world.store.get_run(short.id).exit_code) == (COMPLETED, 0)
    stopped = world.store.get_run(long.id)
    assert (stopped.state, stopped.state_reason) == (CANCELLED, "daemon shutting down")
    assert group_is_gone(world.pid(long))
    late = world.run("short")
    world.worker.step(at(6))  # a worker shut down claims nothing
    assert world.state(late) == SCHEDULED


# -- pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "code", "stop", "expected"), [
    (RUNNING, 0, None, (COMPLETED, "exit code 0")),
    (RUNNING, 2, None, (FAILED, "exit code 2")),
    (RUNNING, -9, None, (FAILED, "killed by SIGKILL")),
    (RUNNING, -15, TIMEOUT, (FAILED, "timed out after 1m30s")),
    (RUNNING, 0, TIMEOUT, (FAILED, "timed out after 1m30s")),
    (CANCELLING, 0, CANCEL, (CANCELLED, "cancelled by request")),
    (CANCELLING, 1, None, (CANCELLED, "cancelled by request")),
    (CANCELLING, -15, TIMEOUT, (CANCELLED, "cancelled by request")),
    (CANCELLING, -15, SHUTDOWN, (CANCELLED, "daemon shutting down")),
])
def test_finish_outcome(state: str, code: int, stop: str | None, expected: tuple[str, str]) -> None:
    assert finish_outcome(state, code, stop, 90) == expected


def test_reason_words() -> None:
    assert exit_reason(-99) == "killed by signal 99"
    assert retry_reason("exit code 1", 2, 3, 90) == "exit code 1; retry 2/3 in 1m30s"
    assert retry_reason("exit code 1", 2, 3, 0) == "exit code 1; retry 2/3 now"
    assert grace_seconds({"terminationGracePeriod": "2m"}) == 120
    assert grace_seconds({}) == grace_seconds({"terminationGracePeriod": "soon"}) == 10


def test_waiter_threads_are_reused_from_job_to_job() -> None:
    waiters = WaiterPool()
    done = threading.Event()
    for _ in range(20):
        done.clear()
        waiters.submit(done.set)
        assert done.wait(5)
        wait_for(lambda: waiters.idle == 1, what="the waiter to be idle")
    assert waiters.idle == 1  # one thread served all twenty
    gate = threading.Event()
    for _ in range(3):
        waiters.submit(lambda: gate.wait(5))
    wait_for(lambda: waiters.idle == 0, what="the busy waiters")
    gate.set()
    wait_for(lambda: waiters.idle == 3, what="three waiters, two of them new")


def test_worker_identity_tells_live_workers_from_dead_ones() -> None:
    me = worker_identity()
    parsed = LocalWorkerId.parse(me)
    assert parsed is not None and (parsed.host, parsed.pid) == (socket.gethostname(), os.getpid())
    assert local_worker_alive(me) is True
    assert local_worker_alive(LocalWorkerId(parsed.host, os.getpid(), "1").format()) is False
    assert local_worker_alive(LocalWorkerId(parsed.host, dead_pid(), parsed.start).format()) is False
    assert local_worker_alive(LocalWorkerId("another-host", os.getpid(), parsed.start).format()) is None
    assert local_worker_alive("remote:elsewhere:1") is None
    assert LocalWorkerId.parse("local:nohost") is None


def test_an_unreachable_docker_engine_is_news_only_when_a_pool_needs_it(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A process-only host has no Docker engine, and each daemon start saying so was noise;
    with a docker pool applied, the same failure is worth a warning."""
    nowhere = f"unix://{world.tmp}/no-engine.sock"  # a real client, to a socket nobody serves
    engine_less = DockerRunner(world.tmp, client_factory=lambda: docker.DockerClient(base_url=nowhere))
    worker = LocalWorker(world.store, runners={"process": world.runner, "docker": engine_less},
                         log_dir=world.tmp / "logs", worker_id=worker_identity())

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    with caplog.at_level(logging.DEBUG, logger="orchestra.worker"):
        assert worker.recover(T0) == []
        assert warnings() == []
        assert any("cannot clean up the jobs of finished docker runs" in r.getMessage() for r in caplog.records)
        world.apply(pool("boxes", type="docker"))
        worker = LocalWorker(world.store, runners={"process": world.runner, "docker": engine_less},
                             log_dir=world.tmp / "logs", worker_id=worker_identity())
        worker.recover(T0)
    assert [m.split(":")[0] for m in warnings()] == ["cannot clean up the jobs of finished docker runs"]


# -- a store that cannot be written for a moment ------------------------------------------------


def test_a_store_locked_past_its_busy_timeout_costs_the_started_job_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the write lock longer than the busy timeout just as a pass would
    record a start: the pass fails, the job runs on, and the next pass records it."""
    import sqlite3

    from orchestra.errors import StoreError
    from orchestra.store import engine as engine_module

    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(local_module, "RECORD_START_WITHIN", 0.0)  # the next pass records the start
    world = World(tmp_path)
    try:
        world.job("slow", [PY, "-c", "import time; time.sleep(1)"])
        run = world.run("slow")
        world.woke.clear()
        world.worker.step(T0)  # claims and starts; the next pass records the start
        assert world.woke.wait(10), "the start was never handed over"
        locker = sqlite3.connect(tmp_path / "orchestra.db", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # as a long `orchestra apply` or a backup would
            with pytest.raises(StoreError):
                world.worker.step(T0)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert world.runner.handles[run.id].poll() is None, "the job was killed"
        done = world.step_until(world.reached(run, COMPLETED, FAILED, CRASHED), T0, what="the run to end")
        assert (done.state, done.attempt) == (COMPLETED, 1)
        assert [(e[0], e[1]) for e in world.reasons(run)] == [
            (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING), (RUNNING, COMPLETED)]
    finally:
        world.close()
