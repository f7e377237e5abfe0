"""The shortcuts that keep a burst's CPU per run low, and the guarantees they must keep.

- rendering: a run that sets no job variable gets an empty variables patch
  without diffing, and a worker's pool template is compiled once per dict,
  yet a changed template is never served stale;
- a burst pass stores the events of the jobs that ended and of the runs it
  claimed in one insert, and every transition still has its event;
- the daemon re-reads the store's change marker at most every
  ``MARKER_REUSE`` seconds in passes a job's end forced, never less in a
  quiet pass or after a spec reload.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from worker_fixtures import T0, Gate, World, at, pool, wait_for, world_fixture  # noqa: F401

from orchestra.jobs import default_template, render_job
from orchestra.reconcile import daemon as daemon_module
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.runners import process as process_module
from orchestra.store import COMPLETED, PENDING, RUNNING, SCHEDULED, Store, open_store
from orchestra.store.engine import Database, make_engine
from orchestra.workers import local as local_module


def deployment(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "orchestra/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"pool": "p", "command": ["run"], **spec}}


# --- rendering -----------------------------------------------------------------------------------------------------


def test_a_run_without_job_variables_records_an_empty_patch_and_the_defaults() -> None:
    rendered = render_job(default_template("docker"), deployment())
    assert rendered.variables_patch == []
    assert rendered.variables["image"] == default_template("docker")["variables"]["properties"]["image"]["default"]


def test_a_variable_set_to_its_default_still_yields_the_patch_a_diff_gives() -> None:
    image = default_template("docker")["variables"]["properties"]["image"]["default"]
    assert render_job(default_template("docker"), deployment(jobVariables={"image": image})).variables_patch == []
    patch = render_job(default_template("docker"), deployment(), job_variables={"image": "etl:2"}).variables_patch
    assert patch == [{"op": "replace", "path": "/image", "value": "etl:2"}]


def test_a_changed_template_is_rendered_with_its_new_content() -> None:
    template = default_template("process")
    first = render_job(template, deployment())
    changed = {**template, "jobConfiguration": {**template["jobConfiguration"], "extra": "{{ run.id }}"}}
    second = render_job(changed, deployment(), run_id="r-1")
    assert "extra" not in first.job
    assert second.job["extra"] == "r-1"
    assert "extra" not in render_job(template, deployment()).job  # and the first one again


# --- a burst pass ---------------------------------------------------------------------------------------------------


def test_a_burst_pass_inserts_the_events_of_its_starts_ends_and_claim_at_once(world: World) -> None:
    gate = Gate(world.tmp)
    world.apply(pool("local", concurrencyLimit=2))
    world.job("quick", gate.command)
    runs = [world.run("quick", at(-60 + i)) for i in range(4)]
    world.worker.step(T0)  # claims two; the next pass records their starts
    first, second = runs[:2], runs[2:]
    assert {world.state(run) for run in first} == {PENDING}
    gate.open()
    wait_for(lambda: all(world.runner.handles[r.id].poll() is not None for r in first), what="the jobs to end")
    inserts: list[int] = []
    sa.event.listen(world.store.engine, "before_cursor_execute", lambda _c, _cur, statement, params, *_: inserts.append(
        len(params)) if statement.startswith("INSERT INTO run_events") else None)
    world.worker.step(at(1))
    assert inserts == [6]  # two starts and two ends (the jobs are over), and two claims
    for run in first:
        assert [(e[0], e[1]) for e in world.reasons(run)][-2:] == [(PENDING, RUNNING), (RUNNING, COMPLETED)]
    for run in second:
        assert [(e[0], e[1]) for e in world.reasons(run)] == [(None, SCHEDULED), (SCHEDULED, PENDING)]


def _exited(pid: int) -> bool:
    """Has our child ``pid`` exited? Peeks without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


@pytest.mark.parametrize("rested", [False, True], ids=["busy", "asleep"])
def test_a_pass_records_the_jobs_it_reaped_itself_and_only_an_end_seen_while_asleep_wakes_the_loop(
        world: World, monkeypatch: pytest.MonkeyPatch, rested: bool) -> None:
    """In a burst the pass reaps the ended jobs itself (``attend``) and records them at once, so
    those ends do not ask for one more pass; an end the pump's thread sees while the loop sleeps does."""
    monkeypatch.setattr(process_module, "PARK_LIMIT", 600.0)  # the pump's thread never takes over on its own
    monkeypatch.setattr(local_module, "RECORD_START_WITHIN", 0.0)  # the second pass records the start, not puts it off
    world.worker.rest()  # (the pump is shared: an earlier test's loop may have attended last)
    gate = Gate(world.tmp)
    world.apply(pool("local"))
    world.job("quick", gate.command)
    run = world.run("quick", at(-1))
    try:
        world.worker.step(T0)  # claims and starts it
        world.worker.step(T0)  # records the start, and follows the job
        assert world.state(run) == RUNNING
        pid = world.runner.handles[run.id].pid
        world.woke.clear()
        if rested:
            world.worker.rest()  # the loop goes to sleep
        gate.open()
        if rested:
            assert world.woke.wait(20), "the pump's thread saw the end and woke the loop"
        else:
            wait_for(lambda: _exited(pid), what="the job to exit")
        world.worker.step(T0)
        assert world.state(run) == COMPLETED
        if not rested:
            assert not world.woke.is_set()  # recorded by the pass that reaped it: no pass more
    finally:
        world.worker.rest()


# --- the daemon's change marker ------------------------------------------------------------------------------------


class CountingStore(Store):
    """A real store that counts its change marker reads (the cost under test)."""

    reads = 0

    def change_marker(self) -> tuple[int, int]:
        self.reads += 1
        return super().change_marker()


def test_forced_passes_reuse_a_recent_marker_but_quiet_passes_and_reloads_read_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "MARKER_REUSE", 600.0)  # no pass here is ever "too late" on a slow machine
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "pool.yaml").write_text("apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\n"
                                     "spec: {type: process}\n")
    url = f"sqlite:///{tmp_path / 'o.db'}"
    open_store(url).close()
    store = CountingStore(Database(make_engine(url)))
    daemon = Daemon(store, None, DaemonSettings(paths=[specs], watch=False, resync_interval=3600))
    try:
        daemon.start()
        daemon.run_once()  # the first pass always reads
        assert store.reads == 1
        daemon.wake()  # a job ended: a full pass, on the marker read a moment ago
        daemon.run_once()
        assert store.reads == 1
        daemon.run_once()  # a quiet pass: the marker is how other processes' changes are seen
        assert store.reads == 2
        daemon.spec_changed()
        daemon.specs.last_event -= 1.0  # the debounce is over
        daemon.wake()
        daemon.run_once()  # re-applied: new schedules must tick now, so read again
        assert store.reads == 3
    finally:
        store.close()


class RestingWorker:
    """A worker that counts how often the daemon's loop tells it it goes to sleep."""

    def __init__(self) -> None:
        self.rests = 0

    def recover(self, now: Any) -> list[str]:
        return []

    def step(self, now: Any) -> None:
        return None

    def shutdown(self, grace: float, now_fn: Any) -> None:
        pass

    def unreachable_pools(self, now: Any) -> list[dict[str, str]]:
        return []

    def rest(self) -> None:
        self.rests += 1


def test_the_loop_lets_the_worker_rest_only_when_it_really_sleeps(tmp_path: Path) -> None:
    """In a burst a job's end asks for the next pass at once: the worker's thread stays busy and
    keeps the runners' threads parked (``LocalWorker.rest``); only a real sleep hands them the work."""
    worker = RestingWorker()
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    daemon = Daemon(store, worker, DaemonSettings(paths=[tmp_path], watch=False))
    try:
        daemon.wake()  # a job ended during the pass
        daemon._sleep(5.0)  # returns at once: no rest
        assert worker.rests == 0
        daemon._sleep(0.01)  # nothing asks for a pass: the loop sleeps
        assert worker.rests == 1
    finally:
        store.close()
