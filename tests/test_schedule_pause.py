"""Pausing one schedule: runtime state the scheduler honours for that schedule only."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestra.errors import NotFound
from orchestra.planning.render import render_plan
from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.operations import set_paused
from orchestra.reconcile.scheduler import Scheduler
from orchestra.store import Store, open_store
from tests.api_fixtures import LiveApi, api_factory_fixture, api_fixture  # noqa: F401
from tests.conftest import CliResult
from tests.store_fixtures import FakeClock

POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process}\n"
JOB = """
apiVersion: orchestra/v1
kind: Deployment
metadata: {name: job}
spec:
  command: [echo, hi]
  pool: local
  schedules:
    - {interval: 1m, name: often}
    - {interval: 1m, anchor: "2030-01-01T00:00:30Z"}
"""
T0 = datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.specs = tmp_path / "specs"
        self.specs.mkdir()
        (self.specs / "pool.yaml").write_text(POOL)
        (self.specs / "job.yaml").write_text(textwrap.dedent(JOB).lstrip())
        self.clock = FakeClock(T0)
        self.store: Store = open_store(f"sqlite:///{tmp_path / 'o.db'}", clock=self.clock)
        self.apply()
        self.scheduler = Scheduler(self.store)

    def apply(self) -> None:
        apply_plan(self.store, plan_specs(self.store, [self.specs], prune=True, now=self.clock()))

    def at(self, hh: int, mm: int, ss: int = 0) -> None:
        self.clock.now = datetime(2030, 1, 1, hh, mm, ss, tzinfo=UTC)
        self.scheduler.tick(self.clock.now)

    def runs(self) -> list[tuple[str, str, str, str]]:
        found = self.store.list_runs(deployment="job", limit=1000)
        return sorted((r.slot_time.strftime("%H:%M:%S") if r.slot_time else "-", r.schedule_identity or "",
                       r.state, r.state_reason) for r in found)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


ANCHORED = "interval:60s@1970-01-01T00:00:30Z"


def test_a_paused_schedule_records_its_slots_skipped_and_the_others_run(world: World) -> None:
    world.at(12, 0, 20)
    state = set_paused(world.store, "schedule", "job/often", True)
    assert (state.kind, state.name, state.paused) == ("Schedule", "job/often", True)
    for hh, mm, ss in ((12, 0, 30), (12, 1, 0), (12, 1, 30), (12, 2, 0)):
        world.at(hh, mm, ss)
    assert world.runs() == [
        ("12:00:30", ANCHORED, "Scheduled", "scheduled"),
        ("12:01:00", "often", "Skipped", "schedule paused"),
        ("12:01:30", ANCHORED, "Scheduled", "scheduled"),
        ("12:02:00", "often", "Skipped", "schedule paused"),
    ]


def test_resuming_makes_the_next_slots_run(world: World) -> None:
    world.at(12, 0, 20)
    set_paused(world.store, "schedule", "job/0", True)  # by index
    world.at(12, 1, 0)
    set_paused(world.store, "schedule", "job/often", False)
    world.at(12, 2, 0)
    often = [r for r in world.runs() if r[1] == "often"]
    assert often == [("12:01:00", "often", "Skipped", "schedule paused"),
                     ("12:02:00", "often", "Scheduled", "scheduled")]


def test_a_paused_deployment_still_says_deployment_paused(world: World) -> None:
    world.at(12, 0, 20)
    set_paused(world.store, "schedule", "job/often", True)
    set_paused(world.store, "deployment", "job", True)
    world.at(12, 1, 0)
    assert world.runs() == [("12:00:30", ANCHORED, "Skipped", "deployment paused"),
                            ("12:01:00", "often", "Skipped", "deployment paused")]


def test_apply_leaves_the_pause_alone_and_plan_notes_it(world: World) -> None:
    set_paused(world.store, "schedule", "job/1", True)
    spec = world.specs / "job.yaml"
    spec.write_text(spec.read_text().replace("[echo, hi]", "[echo, bye]"))
    result = plan_specs(world.store, [world.specs], prune=True, now=world.clock())
    note = f"Deployment/job schedule {ANCHORED!r} is paused at runtime (not in specs); apply leaves it paused"
    assert note in result.plan.notes
    assert note in render_plan(result.plan)
    apply_plan(world.store, result)
    assert world.store.paused_schedules() == {("job", ANCHORED)}


def test_unknown_schedules_are_not_found_with_the_ones_there_are(world: World) -> None:
    with pytest.raises(NotFound, match=r"Deployment/job has no schedule 'weekly' \(its schedules: often, 1\)"):
        set_paused(world.store, "schedule", "job/weekly", True)
    with pytest.raises(NotFound, match="DEPLOYMENT/SCHEDULE"):
        set_paused(world.store, "schedule", "job", True)
    with pytest.raises(NotFound):
        set_paused(world.store, "schedule", "ghost/often", True)


def test_the_cli_pauses_and_resumes_a_schedule(cli: Callable[..., CliResult],
                                               write: Callable[[str, str], Path]) -> None:
    write("specs/pool.yaml", POOL)
    write("specs/job.yaml", JOB)
    assert cli("apply", "specs").code == 0
    paused = cli("pause", "schedule", "job/often")
    assert (paused.code, paused.out) == (0, "Schedule/job/often: paused\n")
    assert cli("resume", "schedule", "job/often").out == "Schedule/job/often: active\n"
    missing = cli("pause", "schedule", "job/nope")
    assert missing.code == 1 and "has no schedule 'nope'" in missing.err


def test_the_api_pauses_a_schedule_and_shows_it(api: LiveApi) -> None:
    response = api.client.post("/api/v1/deployments/etl-nightly/schedules/0/pause")
    assert response.status_code == 200, response.text
    assert response.json() == {"deployment": "etl-nightly", "schedule": "interval:21600s@1970-01-01T00:00:00Z",
                                "index": 0, "paused": True}
    runs = api.client.get("/api/v1/deployments/etl-nightly").json()["nextRuns"]
    assert [(r["paused"], r["times"]) for r in runs] == [(True, []), (False, [])]
    assert api.client.get("/api/v1/deployments/etl-nightly/upcoming").json()["runs"] == []
    resumed = api.client.post("/api/v1/deployments/etl-nightly/schedules/0/resume").json()
    assert resumed["paused"] is False
    assert len(api.client.get("/api/v1/deployments/etl-nightly/upcoming?count=3").json()["runs"]) == 3
    assert api.client.post("/api/v1/deployments/etl-nightly/schedules/9/pause").status_code == 404
    assert api.client.post("/api/v1/deployments/ghost/schedules/0/pause").status_code == 404
