"""A worker that sleeps until runs fall due rehearses their claim shortly before
(``LocalWorker._rehearse``): the real claim then starts warm, and the pass at the
due time claims at once. The rehearsal must change nothing, happen once per due
time, and never make the worker claim when nothing is due. The runs it names are
prepared in a thread (``Launcher.prepare``): their logs made, never truncated, and
their jobs rendered, used only while what they were rendered from still holds.

Real processes and a real SQLite store, driven pass by pass (tests/worker_fixtures.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from worker_fixtures import T0, TrackingRunner, World, at, is_gone, pool, wait_for, world_fixture  # noqa: F401

from orchestra.runners.process import HeldJob, ProcessHandle
from orchestra.store import CANCELLED, PENDING, RUNNING, SCHEDULED
from orchestra.workers import holding as holding_module
from orchestra.workers import launching
from orchestra.workers.launching import make_empty_files
from orchestra.workers.local import REHEARSE_AHEAD


class WarmedRunner(TrackingRunner):
    """The tracking runner with the optional ``warm`` hook, counting its calls."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.warmed = 0

    def warm(self) -> None:
        self.inner.warm()
        self.warmed += 1


def statements(world: World) -> list[str]:
    """Every statement the store runs from now on (a list that grows)."""
    seen: list[str] = []
    sa.event.listen(world.store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_runs_due_soon_have_their_claim_rehearsed_once_and_nothing_changes(world: World) -> None:
    world.runner = WarmedRunner(world.tmp)
    world.worker = world.make_worker()
    world.apply(pool("local", concurrencyLimit=4))
    world.job("quick", ["true"])
    due = at(0.5)
    runs = [world.run("quick", due) for _ in range(3)]
    marker = world.store.change_marker()
    began = world.writes()

    assert world.worker.step(T0) == due  # sleeps until they are due
    assert (len(began), world.runner.warmed) == (1, 1)  # one rehearsal: a write transaction, rolled back
    assert world.store.change_marker() == marker
    assert [world.state(run) for run in runs] == [SCHEDULED] * 3
    assert (world.tmp / "logs").is_dir() and world.runner.handles == {}

    assert world.worker.step(at(0.1)) == due
    assert (len(began), world.runner.warmed) == (1, 1)  # once per due time


def test_at_the_rehearsed_time_the_pass_claims_without_asking_first(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=4))
    world.job("quick", ["true"])
    due = at(0.5)
    runs = [world.run("quick", due) for _ in range(3)]
    world.worker.step(T0)
    seen = statements(world)

    world.step(due)

    first_write = seen.index("BEGIN IMMEDIATE")
    assert not any("min(runs.scheduled_time)" in sql for sql in seen[:first_write])
    assert all(world.state(run) in (RUNNING, "Completed") for run in runs)
    assert [e[1] for e in world.reasons(runs[0])][:3] == [SCHEDULED, PENDING, RUNNING]


def test_runs_due_later_than_the_rehearsal_window_are_not_rehearsed(world: World) -> None:
    world.apply(pool("local"))
    world.job("quick", ["true"])
    later = T0 + REHEARSE_AHEAD * 3
    world.run("quick", later)
    began = world.writes()
    assert world.worker.step(T0) == later
    assert began == []


def test_a_rehearsed_run_cancelled_before_its_time_leaves_the_worker_quiet(world: World) -> None:
    world.apply(pool("local"))
    world.job("quick", ["true"])
    due = at(0.5)
    run = world.run("quick", due)
    world.worker.step(T0)
    world.store.transition(run.id, CANCELLED, "cancelled before it was due", expect={SCHEDULED})

    assert world.step(due) is None  # one claim at the due time finds nothing, and nothing else is due
    began = world.writes()
    assert world.step(at(1)) is None
    assert began == []  # the rehearsal does not keep the worker claiming
    assert world.state(run) == CANCELLED and world.runner.handles == {}


def test_a_runner_without_warm_is_still_rehearsed_for(world: World) -> None:
    world.apply(pool("local"))
    world.job("quick", ["true"])
    due = at(0.5)
    run = world.run("quick", due)
    assert not hasattr(world.runner, "warm")
    assert world.worker.step(T0) == due
    world.step_until(world.reached(run, "Completed"), due, what="the rehearsed run")


def test_the_logs_of_rehearsed_runs_are_made_ahead_and_an_earlier_attempts_is_kept(world: World) -> None:
    world.apply(pool("local", concurrencyLimit=2))
    world.job("quick", ["echo", "out"])
    due = at(0.9)
    runs = [world.run("quick", due) for _ in range(4)]
    logs = world.tmp / "logs"
    logs.mkdir()
    (logs / f"{runs[3].id}.log").write_text("[orchestra] attempt 1 of 2 ended: Failed\n")

    world.worker.step(T0)
    maker = world.worker.preparing
    assert maker is not None
    maker.join(timeout=10)
    # every due run's, not only the two the rehearsed claim would take
    assert [(logs / f"{run.id}.log").read_text() for run in runs] == ["", "", "",
                                                                      "[orchestra] attempt 1 of 2 ended: Failed\n"]
    assert [world.state(run) for run in runs] == [SCHEDULED] * 4

    world.step_until(lambda: all(world.state(run) == "Completed" for run in runs), due, what="the four runs")
    text = (logs / f"{runs[0].id}.log").read_text()
    assert text.startswith("[orchestra] attempt 1 of 1 started at ") and "\nout\n" in text
    assert (logs / f"{runs[3].id}.log").read_text().startswith("[orchestra] attempt 1 of 2 ended: Failed\n[orchestra]")


def test_making_logs_ahead_stops_at_its_deadline_and_on_an_error(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.log" for n in range(3)]
    assert make_empty_files(paths, deadline=time.monotonic() - 1) == 0
    assert not any(path.exists() for path in paths)
    assert make_empty_files(paths, deadline=time.monotonic() + 60) == 3
    assert all(path.read_bytes() == b"" for path in paths)
    missing = [tmp_path / "no-such-dir" / "a.log", tmp_path / "b.log"]
    assert make_empty_files(missing, deadline=time.monotonic() + 60) == 0  # left to the start that needs it
    assert not missing[1].exists()


def counted_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the runs ``render_run`` renders from now on."""
    rendered: list[str] = []
    real = launching.render_run

    def counting(deployment: Any, pool: Any, run: Any, python: str) -> Any:
        rendered.append(run.id)
        return real(deployment, pool, run, python)

    monkeypatch.setattr(launching, "render_run", counting)
    return rendered


def test_the_jobs_of_rehearsed_runs_are_rendered_ahead_and_used_once(world: World,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    world.apply(pool("local", concurrencyLimit=2))
    world.job("quick", ["echo", "{{ parameters.who }}"], parameters={"who": "ahead"})
    due = at(0.9)
    runs = [world.run("quick", due) for _ in range(3)]
    rendered = counted_renders(monkeypatch)

    world.worker.step(T0)
    assert world.worker.preparing is not None
    world.worker.preparing.join(timeout=10)
    assert sorted(rendered) == sorted(run.id for run in runs)

    world.step_until(lambda: all(world.state(run) == "Completed" for run in runs), due, what="the three runs")
    assert len(rendered) == 3  # the starts took the jobs rendered ahead
    stored = world.store.get_run(runs[0].id)
    assert stored.job is not None and stored.job["command"] == ["echo", "ahead"]
    assert "\nahead\n" in (world.tmp / "logs" / f"{runs[0].id}.log").read_text()


def test_a_job_rendered_ahead_is_not_used_once_its_deployment_changed(world: World,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    world.apply(pool("local"))
    world.job("quick", ["echo", "before"])
    due = at(0.9)
    run = world.run("quick", due)
    rendered = counted_renders(monkeypatch)
    world.worker.step(T0)
    assert world.worker.preparing is not None
    world.worker.preparing.join(timeout=10)
    assert rendered == [run.id]

    world.job("quick", ["echo", "after"])  # applied between the rehearsal and the due time
    world.step_until(world.reached(run, "Completed"), due, what="the run")
    assert rendered == [run.id, run.id]  # rendered again, from the deployment as it is now
    assert world.store.get_run(run.id).job["command"] == ["echo", "after"]
    assert "\nafter\n" in (world.tmp / "logs" / f"{run.id}.log").read_text()


def test_a_rehearsed_run_whose_job_does_not_render_fails_at_its_start_as_before(world: World) -> None:
    world.apply(pool("local"))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    world.job("typed", ["echo", "{{ parameters.n }}"], parameterSchema=schema)
    due = at(0.9)
    run = world.run("typed", due, parameters={"n": "many"}, max_attempts=3)
    world.worker.step(T0)
    assert world.worker.preparing is not None
    world.worker.preparing.join(timeout=10)
    assert world.state(run) == SCHEDULED  # the failed render ahead changed nothing

    world.step(due)
    done = world.store.get_run(run.id)
    assert (done.state, done.attempt) == ("Failed", 1)
    assert done.state_reason.startswith("cannot render the job: parameter n")
    assert done.state_reason in world.log(run)


class HoldingRunner(TrackingRunner):
    """The tracking runner with the optional ``hold``: jobs rendered ahead are made
    ahead and held; counts how each job started."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.made: list[HeldJob] = []
        self.released: list[str] = []
        self.started: list[str] = []

    def hold(self, run_id: str, job: dict[str, Any]) -> HeldJob | None:
        held = self.inner.hold(run_id, job)
        if held is not None:
            self.made.append(held)
        return held

    def start_held(self, held: HeldJob, log_path: Path, note: str | None = None) -> ProcessHandle:
        handle = self.inner.start_held(held, log_path, note)
        self.released.append(log_path.stem)
        self.handles[log_path.stem] = handle
        return handle

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, **run: Any) -> ProcessHandle:
        self.started.append(run_id)
        return super().start(run_id, job, log_path, **run)

    def waiting(self) -> list[int]:
        """The pids of held jobs whose process is still there (not released, not dropped)."""
        return [held.child.pid for held in self.made if not is_gone(held.child.pid)
                and held.child.pid not in {handle.pid for handle in self.handles.values()}]

    def close(self) -> None:
        for held in self.made:
            held.drop()
        super().close()


@pytest.fixture
def holding(world: World) -> HoldingRunner:
    runner = HoldingRunner(world.tmp)
    world.runner = runner
    world.worker = world.make_worker()
    world.apply(pool("local", concurrencyLimit=2))
    return runner


def prepared(world: World) -> None:
    assert world.worker.preparing is not None
    world.worker.preparing.join(timeout=10)


def test_the_jobs_of_rehearsed_runs_are_made_ahead_and_released_at_their_start(world: World,
                                                                               holding: HoldingRunner) -> None:
    world.job("quick", ["echo", "{{ parameters.who }}"], parameters={"who": "held"})
    due = at(0.9)
    runs = [world.run("quick", due) for _ in range(3)]

    world.worker.step(T0)
    prepared(world)
    assert len(holding.waiting()) == 3 and [world.state(run) for run in runs] == [SCHEDULED] * 3

    world.step_until(lambda: all(world.state(run) == "Completed" for run in runs), due, what="the three runs")
    assert sorted(holding.released) == sorted(run.id for run in runs) and holding.started == []
    assert holding.waiting() == [] and len(world.worker._launcher.held) == 0
    for run in runs:
        log = world.log(run)
        assert log.startswith("[orchestra] attempt 1 of 1 started at ") and "\nheld\n" in log
        assert world.store.get_run(run.id).runner_ident.startswith(f"pid:{world.runner.handles[run.id].pid}:")


def test_a_held_job_is_dropped_unrun_once_its_deployment_changed(world: World, holding: HoldingRunner) -> None:
    marker = world.tmp / "old-version-ran"
    world.job("quick", ["touch", str(marker)])
    due = at(0.9)
    run = world.run("quick", due)
    world.worker.step(T0)
    prepared(world)
    [old] = holding.waiting()

    world.job("quick", ["echo", "new version"])  # applied between the rehearsal and the due time
    world.step_until(world.reached(run, "Completed"), due, what="the run")
    assert holding.started == [run.id] and holding.released == []
    assert is_gone(old) and not marker.exists()
    assert "\nnew version\n" in world.log(run)


def test_held_jobs_are_dropped_when_the_worker_stops(world: World, holding: HoldingRunner) -> None:
    marker = world.tmp / "ran"
    world.job("quick", ["touch", str(marker)])
    runs = [world.run("quick", at(0.9)) for _ in range(2)]
    world.worker.step(T0)
    prepared(world)
    pids = holding.waiting()
    assert len(pids) == 2

    world.worker.shutdown(1.0, lambda: T0)
    assert all(is_gone(pid) for pid in pids) and not marker.exists()
    assert [world.state(run) for run in runs] == [SCHEDULED] * 2  # left for the next daemon, as before


def test_a_held_job_whose_run_never_starts_is_dropped_after_its_time(world: World, holding: HoldingRunner,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holding_module, "HOLD_PAST_DUE", 0.0)
    world.job("quick", ["true"])
    due = at(0.5)
    run = world.run("quick", due)
    world.worker.step(T0)
    prepared(world)
    [pid] = holding.waiting()
    world.store.transition(run.id, CANCELLED, "cancelled before it was due", expect={SCHEDULED})

    wait_for(lambda: time.monotonic() > world.worker._launcher.held._entries[run.id].expires, timeout=10,
             what="the held job's time to pass")
    world.step(due)
    assert is_gone(pid) and len(world.worker._launcher.held) == 0
    assert holding.released == holding.started == []
