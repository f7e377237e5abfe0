"""The worker's burst pass: the jobs that ended are recorded and the pool claimed in one
store write (``Store.finish_and_claim``), and a store without that method (a remote
worker's HTTP client) still gets every guarantee through the separate calls.

Real processes and a real SQLite store, driven pass by pass (tests/worker_fixtures.py).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from worker_fixtures import T0, Gate, World, at, group_is_gone, pool, wait_for, world_fixture  # noqa: F401

from orchestra.errors import StoreError
from orchestra.reconcile.operations import cancel_run
from orchestra.store import CANCELLED, CANCELLING, COMPLETED, PENDING, RUNNING, SCHEDULED, Run, Store
from orchestra.workers import LocalWorker
from orchestra.workers import local as local_module
from orchestra.workers.outcomes import CANCELLED_BY_REQUEST


class NarrowStore:
    """The store's methods except ``finish_and_claim``, as a remote worker's HTTP store
    client offers them: a real store behind a narrower face, not a mock."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "finish_and_claim":
            raise AttributeError(name)
        return getattr(self._store, name)


def test_the_room_an_ended_job_frees_is_claimed_and_started_in_the_same_pass(world: World) -> None:
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=1))
    world.job("quick", gate.command)
    first, second = world.run("quick", at(-60)), world.run("quick", at(-30))
    world.step(T0)
    assert (world.state(first), world.state(second)) == (RUNNING, SCHEDULED)
    gate.open()
    wait_for(lambda: world.runner.handles[first.id].poll() is not None, what="the first job to end")
    began = world.writes()
    world.worker.step(at(1))
    assert (world.state(first), world.state(second)) == (COMPLETED, PENDING)
    assert len(began) == 1 and second.id in world.runner.handles  # the end with the claim; the job started
    world.step_until(lambda: world.state(second) in (RUNNING, COMPLETED), at(1), what="its start recorded")
    assert [(e[0], e[1]) for e in world.reasons(second)][:3] == [
        (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING)]


def test_a_deployment_changed_while_jobs_ran_is_rendered_anew_in_a_burst_pass(world: World) -> None:
    """The claim hands its deployments to the worker's cache: they must be the current ones."""
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=1))
    world.job("show", gate.printing("before"))
    first, second = world.run("show", at(-60)), world.run("show", at(-30))
    world.step(T0)
    assert world.state(first) == RUNNING
    world.job("show", gate.printing("after"))
    gate.open()
    wait_for(lambda: world.runner.handles[first.id].poll() is not None, what="the first job to end")
    world.step_until(world.reached(second, COMPLETED), at(1), what="the second run")
    assert world.log(first).splitlines()[1] == "before"
    assert world.log(second).splitlines()[1] == "after"


def test_a_pause_made_while_jobs_ran_holds_back_the_burst_pass(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=1))
    world.job("quick", ["true"])
    first, second = world.run("quick", at(-60)), world.run("quick", at(-30))
    world.worker.step(T0)
    world.store.set_paused_override("Deployment", "quick", True)
    wait_for(lambda: world.runner.handles[first.id].poll() is not None, what="the first job to end")
    world.worker.step(at(1))
    assert (world.state(first), world.state(second)) == (COMPLETED, SCHEDULED)
    world.store.set_paused_override("Deployment", "quick", None)
    world.step_until(world.reached(second, COMPLETED), at(2), what="the second run after the resume")


def test_a_cancel_that_lands_as_the_job_ends_is_recorded_once(world: World) -> None:
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=1))
    world.job("quick", gate.command)
    first, second = world.run("quick", at(-60)), world.run("quick", at(-30))
    world.step(T0)
    assert world.state(first) == RUNNING
    gate.open()
    wait_for(lambda: world.runner.handles[first.id].poll() is not None, what="the first job to end")
    world.store.transition(first.id, CANCELLING, "cancel requested", expect={RUNNING})
    world.step_until(world.reached(second, COMPLETED), at(1), what="the second run")
    assert world.state(first) in {COMPLETED, CANCELLED}
    assert [e[1] for e in world.reasons(first)] == [SCHEDULED, PENDING, RUNNING, CANCELLING, world.state(first)]


def test_a_store_without_finish_and_claim_drains_the_same_way(world: World, tmp_path: Path) -> None:
    world.apply(pool("local", concurrencyLimit=2))
    world.job("quick", ["true"])
    runs = [world.run("quick") for _ in range(6)]
    world.worker = LocalWorker(NarrowStore(world.store), runners={"process": world.runner},  # type: ignore[arg-type]
                               worker_id="narrow", log_dir=tmp_path / "logs", on_change=world.woke.set)
    world.step_until(lambda: all(world.state(r) == COMPLETED for r in runs), T0, what="every run to finish")
    for run in runs:
        assert [(e[0], e[1]) for e in world.reasons(run)] == [
            (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING), (RUNNING, COMPLETED)]


class FlakyStore:
    """A real store whose writes fail while ``down`` (the database unreachable): the
    failure is the store's own error type, raised where the real one raises it; or,
    while ``broken``, an error of no known kind (a bug)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name not in ("finish_and_claim", "transition_seen", "transition_many"):
            return method

        def write(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreError("store unavailable: the database is not reachable (test)")
            if self.broken:
                raise RuntimeError("a bug in the write (test)")
            return method(*args, **kwargs)
        return write


def _flaky_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlakyStore, list[Run]]:
    """Two long jobs claimed and started through a store that can be made to fail; the
    next pass records their starts (not put off: what is tested is that write failing)."""
    monkeypatch.setattr(local_module, "RECORD_START_WITHIN", 0.0)
    flaky = FlakyStore(world.store)
    world.worker = LocalWorker(flaky, runners={"process": world.runner},  # type: ignore[arg-type]
                               log_dir=tmp_path / "logs", worker_id=world.worker.worker_id, on_change=world.woke.set)
    world.apply(pool("local", concurrencyLimit=2))
    world.job("long", ["sleep", "30"])
    runs = [world.run("long") for _ in range(2)]
    world.worker.step(T0)  # claimed, and their jobs started: the next pass records them
    assert world.worker.starting == 2 and all(run.id in world.runner.handles for run in runs)
    return flaky, runs


def test_jobs_whose_start_the_store_cannot_record_for_a_moment_run_on_and_are_recorded_later(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky, runs = _flaky_world(world, tmp_path, monkeypatch)
    flaky.down = True
    with pytest.raises(StoreError):
        world.worker.step(at(1))
    assert world.worker.starting == 2  # handed back to the next pass
    assert {world.state(run) for run in runs} == {PENDING}
    flaky.down = False
    world.worker.step(at(2))
    assert {world.state(run) for run in runs} == {RUNNING}
    assert all(world.runner.handles[run.id].poll() is None for run in runs)  # the same jobs, never stopped


def test_jobs_whose_start_a_bug_keeps_from_being_recorded_are_killed_and_their_runs_left_to_their_lease(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky, runs = _flaky_world(world, tmp_path, monkeypatch)
    flaky.broken = True
    with pytest.raises(RuntimeError):
        world.worker.step(at(1))
    for run in runs:  # no job runs on that no pass may ever supervise
        wait_for(lambda run=run: group_is_gone(world.pid(run)), what="the unrecorded job killed")
        assert world.state(run) == PENDING  # the lease runs out, and recovery moves it on
    flaky.broken = False
    assert world.worker.starting == 0
    world.worker.step(at(2))  # the worker goes on; nothing of those runs is left in it
    assert {world.state(run) for run in runs} == {PENDING}


# --- a start recorded with its end ----------------------------------------------------------------------------------


def test_a_job_that_ends_soon_after_its_start_is_recorded_with_its_start_in_one_write(world: World) -> None:
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=1))
    world.job("quick", gate.command)
    run = world.run("quick", at(-1))
    world.worker.step(T0)  # claims and starts it
    began = world.writes()
    world.woke.clear()
    world.worker.step(T0)  # the job runs on: its start is put off, and nothing else is to write
    assert world.state(run) == PENDING and began == []
    world.worker.rest()  # as the daemon's loop before it sleeps
    gate.open()
    assert world.woke.wait(20), "the end of a job whose start was put off did not wake the loop"
    world.worker.step(T0)
    assert len(began) == 1
    stored = world.store.get_run(run.id)
    assert [(e[0], e[1]) for e in world.reasons(run)] == [
        (None, SCHEDULED), (SCHEDULED, PENDING), (PENDING, RUNNING), (RUNNING, COMPLETED)]
    assert stored.runner_ident and stored.job is not None  # all the start records, with the end
    assert stored.start_time is not None and stored.end_time is not None


def test_a_job_still_running_is_recorded_running_once_its_start_was_put_off_long_enough(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=1))
    world.job("long", ["sleep", "30"])
    run = world.run("long", at(-1))
    world.worker.step(T0)
    put_off_at = time.monotonic()
    wake = world.worker.step(T0)
    assert world.state(run) == PENDING
    assert wake is not None and wake <= T0 + timedelta(seconds=local_module.RECORD_START_WITHIN)  # no later
    wait_for(lambda: time.monotonic() - put_off_at >= local_module.RECORD_START_WITHIN, what="the window to pass")
    world.worker.step(T0)
    assert world.state(run) == RUNNING
    assert world.runner.handles[run.id].poll() is None  # the same job, running on


def test_a_run_cancelled_while_its_start_is_put_off_has_its_job_stopped(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=1))
    world.job("long", ["sleep", "30"])
    run = world.run("long", at(-1))
    world.worker.step(T0)
    world.worker.step(T0)
    assert world.state(run) == PENDING  # its job runs, its start not yet recorded
    cancel_run(world.store, run.id)
    done = world.step_until(world.reached(run, CANCELLED), T0, what="the cancel")
    assert done.state_reason == CANCELLED_BY_REQUEST
    wait_for(lambda: group_is_gone(world.pid(run)), what="the job's process group to end")
