"""Draining a burst fast without giving up a guarantee: parallel starts that the loop
does not wait for, a job's whole life recorded in one write, end callbacks, the loop's wake-up.

Real processes, a real SQLite store, real signals. The worker is driven pass
by pass as in tests/test_worker_local.py; parallelism is proved with a
barrier the starts must meet together (serial starts would time out on it),
never with timings.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from worker_fixtures import T0, ConcurrentRunner, Gate, TrackingRunner, World, at, group_is_gone, is_gone, pool, wait_for

from orchestra.reconcile.daemon import Wakeup
from orchestra.runners.base import start_concurrency
from orchestra.runners.process import ProcessHandle, ProcessRunner
from orchestra.store import COMPLETED, FAILED, PENDING, RUNNING, SCHEDULED, Run


class BarrierRunner(ConcurrentRunner):
    """The starts of the runs ``together`` each wait until all of them are in progress at once."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.together: set[str] = set()
        self.barrier: threading.Barrier | None = None

    def meet(self, runs: list[Run]) -> None:
        self.together = {run.id for run in runs}
        self.barrier = threading.Barrier(len(runs), timeout=10)

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, **run: Any) -> ProcessHandle:
        if self.barrier is not None and run_id in self.together:
            self.barrier.wait()  # BrokenBarrierError (the run fails) if the starts were one by one
        return super().start(run_id, job, log_path, **run)


class EndsFirstRunner(ConcurrentRunner):
    """Hands each job over only once it has ended: the worker records its start and its end together."""

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, **run: Any) -> ProcessHandle:
        handle = super().start(run_id, job, log_path, **run)
        handle.wait(10)
        return handle


class Interrupted(BaseException):
    """What a start raises that no worker should swallow (like KeyboardInterrupt)."""


class InterruptingRunner(ConcurrentRunner):
    """In the wave set by ``interrupt``, the victim's start raises once every other run's job has started."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.victim: str | None = None
        self.wave: set[str] = set()
        self.started = threading.Semaphore(0)

    def interrupt(self, wave: list[Run], victim: Run) -> None:
        self.wave, self.victim = {run.id for run in wave}, victim.id

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, **run: Any) -> ProcessHandle:
        if run_id != self.victim:
            handle = super().start(run_id, job, log_path, **run)
            if run_id in self.wave:
                self.started.release()
            return handle
        for _ in range(len(self.wave) - 1):
            assert self.started.acquire(timeout=10)
        raise Interrupted()


@pytest.fixture(name="burst")
def burst_fixture(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    world.runner = ConcurrentRunner(tmp_path)
    world.worker = world.make_worker()
    try:
        yield world
    finally:
        world.close()


def use_runner(world: World, runner: TrackingRunner) -> None:
    world.runner.close()
    world.runner = runner
    world.worker = world.make_worker()


def start_alone(world: World) -> Run:
    """A long job started by the worker alone, and recorded Running."""
    run = world.run(when=T0)
    world.step_until(lambda: world.state(run) == RUNNING, at(1), what="the job recorded running")
    return run


def test_runners_that_declare_thread_safe_starts_are_started_in_threads_the_others_one_by_one() -> None:
    assert start_concurrency(ConcurrentRunner(Path("."))) > 1
    assert start_concurrency(TrackingRunner(Path("."))) == 1  # no declaration: serial
    assert start_concurrency(object()) == 1
    # posix_spawn does not hold the interpreter lock while a child starts: started in
    # the worker's own thread, a job costs the loop less than a thread handing it over
    assert start_concurrency(ProcessRunner(Path("."))) == 1


def test_a_claim_is_started_in_parallel_and_every_run_recorded_running(burst: World, tmp_path: Path) -> None:
    runner = BarrierRunner(tmp_path)
    use_runner(burst, runner)
    burst.apply(pool("local", concurrencyLimit=5))
    burst.job("job", ["sh", "-c", "echo hello; sleep 30"])
    runs = [start_alone(burst)]
    wave = [burst.run(when=T0) for _ in range(4)]
    runner.meet(wave)
    burst.step_until(lambda: all(burst.state(run) == RUNNING for run in wave), at(2),
                     what="the four starts, which meet at the barrier, recorded")
    for run in runs + wave:
        stored = burst.store.get_run(run.id)
        assert stored.state == RUNNING, stored.state_reason
        assert stored.runner_ident and stored.runner_ident.startswith(f"pid:{burst.pid(run)}:")
    for run in runs + wave:
        wait_for(lambda run=run: "hello" in burst.log(run), message="job output in the log")
        log = burst.log(run)
        assert log.index("[orchestra] attempt 1 of 1 started") < log.index("hello")


def test_a_job_that_cannot_start_fails_alone_among_parallel_starts(burst: World) -> None:
    burst.apply(pool("local", concurrencyLimit=8))
    burst.job("good", ["true"])
    burst.job("bad", ["/nonexistent/tool"])
    good = [burst.run("good", when=T0) for _ in range(3)]
    bad = burst.run("bad", when=T0)
    burst.step_until(lambda: burst.state(bad) == FAILED, at(1), what="the run that cannot start failed")
    assert "executable '/nonexistent/tool' not found" in burst.store.get_run(bad.id).state_reason
    burst.step_until(lambda: all(burst.state(run) == COMPLETED for run in good), at(1), what="good runs completed")


def test_an_error_while_starting_in_parallel_leaves_no_job_unsupervised(burst: World, tmp_path: Path) -> None:
    runner = InterruptingRunner(tmp_path)
    use_runner(burst, runner)
    burst.apply(pool("local", concurrencyLimit=8))
    burst.job("job", ["sleep", "30"])
    first = start_alone(burst)
    wave = [burst.run(when=T0) for _ in range(3)]
    runner.interrupt(wave, victim=wave[1])
    with pytest.raises(Interrupted):  # handed over by the start thread, raised in the loop's
        burst.step_until(lambda: False, at(2), what="the interrupted start to be raised")
    assert burst.state(first) == RUNNING
    neighbours = [run for run in wave if run is not wave[1]]
    assert all(run.id in runner.handles for run in neighbours)  # both had started their jobs...
    for run in neighbours:  # ...and each is killed with its run left Pending, or was recorded and is supervised
        if burst.state(run) == PENDING:
            wait_for(lambda run=run: group_is_gone(burst.pid(run)), message="an unrecorded job killed")
        else:
            assert burst.state(run) == RUNNING
    assert burst.state(wave[1]) == PENDING  # its lease runs out and recovery moves it on
    burst.worker.shutdown(0, lambda: at(3))  # what the daemon does when the error ends it
    for run in [first, *neighbours]:
        wait_for(lambda run=run: group_is_gone(burst.pid(run)), message="every supervised job stopped")


def test_the_loop_does_not_wait_for_starts_and_records_them_with_the_next_ends_and_claim(burst: World) -> None:
    gate = Gate(burst.tmp)
    burst.apply(pool("local", concurrencyLimit=2))
    burst.job("job", gate.command)
    runs = [burst.run(when=at(-60 + i)) for i in range(4)]
    burst.step_until(lambda: sum(burst.state(run) == RUNNING for run in runs) == 2, T0, what="two jobs running")
    first = [run for run in runs if burst.state(run) == RUNNING]
    gate.open()
    wait_for(lambda: all(burst.runner.handles[r.id].poll() is not None for r in first), what="the jobs to end")
    writes = burst.writes()
    burst.worker.step(at(1))
    assert len(writes) == 1  # the two ends and the claim of two more; their starts go on without the loop
    assert {burst.state(run) for run in first} == {COMPLETED}
    second = [run for run in runs if run not in first]
    assert {burst.state(run) for run in second} == {PENDING}
    burst.step_until(lambda: all(burst.state(run) == COMPLETED for run in runs), at(2), what="every run done")
    for run in runs:
        assert [e.to_state for e in burst.store.events(run.id)] == [SCHEDULED, PENDING, RUNNING, COMPLETED]


def test_a_job_that_ended_before_its_start_was_recorded_is_recorded_start_and_end_in_one_write(
        burst: World, tmp_path: Path) -> None:
    use_runner(burst, EndsFirstRunner(tmp_path))
    burst.apply(pool("local", concurrencyLimit=3))
    burst.job("quick", ["sh", "-c", "echo done; exit 3"])
    runs = [burst.run("quick", when=T0, max_attempts=2) for _ in range(3)]
    inserts: list[list[tuple[str, str]]] = []
    sa.event.listen(burst.store.engine, "before_cursor_execute", lambda _c, _cur, statement, params, *_: inserts.append(
        [(row[0], row[3]) for row in params]) if statement.startswith("INSERT INTO run_events") else None)
    burst.step_until(lambda: all(burst.state(run) == FAILED for run in runs), at(1), what="both attempts failed")
    for run in runs:
        assert [(e.to_state, e.attempt) for e in burst.store.events(run.id)] == [
            (SCHEDULED, 1), (PENDING, 1), (RUNNING, 1), (SCHEDULED, 2), (PENDING, 2), (RUNNING, 2), (FAILED, 2)]
        for attempt_end in (SCHEDULED, FAILED):  # the retry, then the last failure: each with its start
            together = [rows for rows in inserts if (run.id, attempt_end) in rows and (run.id, RUNNING) in rows]
            assert together, f"the start and the end ({attempt_end}) of {run.id} in one insert"
        assert burst.log(run).count("done") == 2


def test_a_burst_larger_than_the_pool_drains_with_every_run_completed_once(burst: World) -> None:
    burst.apply(pool("local", concurrencyLimit=8))
    burst.job("job", ["true"])
    runs = [burst.run(when=T0) for _ in range(40)]

    def done() -> bool:
        states = [burst.state(run) for run in runs]
        assert sum(state in (PENDING, RUNNING) for state in states) <= 8  # the pool's limit, at every pass
        return all(state == COMPLETED for state in states)

    burst.step_until(done, at(1), timeout=60, what="the burst drained")
    for run in runs:
        assert [e.to_state for e in burst.store.events(run.id)] == ["Scheduled", PENDING, RUNNING, COMPLETED]


def test_end_callback_runs_once_when_the_job_is_done_or_at_once_if_it_is(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path)
    handle = runner.start("cb", {"command": ["sh", "-c", "echo out"]}, tmp_path / "cb.log")
    calls: list[int | None] = []
    ended = threading.Event()

    def on_done() -> None:
        calls.append(handle.poll())  # the exit code is there, and so is the whole log
        ended.set()

    handle.add_done_callback(on_done)
    assert ended.wait(10)
    assert calls == [0] and (tmp_path / "cb.log").read_text() == "out\n"
    late: list[str] = []
    handle.add_done_callback(lambda: late.append(threading.current_thread().name))
    assert late == [threading.current_thread().name]  # already done: called at once, here
    assert calls == [0]


def test_ident_read_after_the_job_ended_still_names_it(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path)
    ended = runner.start("gone", {"command": ["true"]}, tmp_path / "gone.log")
    assert ended.wait(10) == 0
    pid_field, start_field = ended.ident.split(":")[1:3]
    assert int(pid_field) == ended.pid and int(start_field) > 0
    assert ended.ident == ended.ident
    assert runner.reap_orphan(ended.ident) is False  # gone, and a recycled PID would not match
    alive = runner.start("alive", {"command": ["sleep", "30"]}, tmp_path / "alive.log")
    try:
        assert runner.reap_orphan(alive.ident) is True  # the ident names this very process
        assert alive.wait(10) == -signal.SIGKILL
        assert is_gone(alive.pid)
    finally:
        alive.kill()


def test_wakeup_is_woken_by_a_signal_handler_during_wait() -> None:
    wakeup = Wakeup()
    previous = signal.signal(signal.SIGALRM, lambda *_: wakeup.set())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        started = time.monotonic()
        wakeup.wait(30)
        assert time.monotonic() - started < 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_wakeup_set_before_wait_is_not_lost_and_many_sets_wake_once() -> None:
    wakeup = Wakeup()
    for _ in range(1000):  # a burst of job ends: one pending wake-up
        wakeup.set()
    started = time.monotonic()
    wakeup.wait(30)
    assert time.monotonic() - started < 10
    started = time.monotonic()
    wakeup.wait(0.05)  # consumed: this one times out
    assert time.monotonic() - started >= 0.04
    setter = threading.Thread(target=wakeup.set)
    setter.start()
    setter.join(10)
    started = time.monotonic()
    wakeup.wait(30)  # set from another thread before the wait
    assert time.monotonic() - started < 10


def test_job_environment_is_the_daemons_and_the_jobs_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_DAEMON", "yes")
    runner = ProcessRunner(tmp_path)
    for run_id in ("one", "two"):
        handle = runner.start(run_id, {"command": ["sh", "-c", "echo $FROM_DAEMON $ORCHESTRA_RUN_ID $OWN"],
                                       "env": {"OWN": run_id.upper()}}, tmp_path / f"{run_id}.log")
        assert handle.wait(10) == 0
        assert (tmp_path / f"{run_id}.log").read_text() == f"yes {run_id} {run_id.upper()}\n"
