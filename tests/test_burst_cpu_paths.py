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

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from worker_fixtures import T0, Gate, World, at, pool, wait_for, world_fixture  # noqa: F401

from orchestra.jobs import default_template, render_job
from orchestra.reconcile import daemon as daemon_module
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.store import COMPLETED, PENDING, RUNNING, SCHEDULED, Store, open_store
from orchestra.store.engine import Database, make_engine


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
