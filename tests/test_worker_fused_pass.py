"""The worker's burst pass: the jobs that ended are recorded and the pool claimed in one
store write (``Store.finish_and_claim``), and a store without that method (a remote
worker's HTTP client) still gets every guarantee through the separate calls.

Real processes and a real SQLite store, driven pass by pass (tests/worker_fixtures.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from worker_fixtures import T0, Gate, World, at, group_is_gone, pool, wait_for, world_fixture  # noqa: F401

from orchestra.errors import StoreError
from orchestra.store import CANCELLED, CANCELLING, COMPLETED, PENDING, RUNNING, SCHEDULED, Run, Store
from orchestra.workers import LocalWorker


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
    world.worker.step(at(1))
    assert len(began) == 2 and world.state(second) in (RUNNING, COMPLETED)  # its start, recorded
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


def _flaky_world(world: World, tmp_path: Path) -> tuple[FlakyStore, list[Run]]:
    """Two long jobs claimed and started through a store that can be made to fail."""
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
        world: World, tmp_path: Path) -> None:
    flaky, runs = _flaky_world(world, tmp_path)
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
        world: World, tmp_path: Path) -> None:
    flaky, runs = _flaky_world(world, tmp_path)
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
