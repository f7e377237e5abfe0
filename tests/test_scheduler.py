"""The scheduler against a real SQLite store, driven by an injected clock."""

from __future__ import annotations

import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from orchestra.reconcile.apply import apply_plan, plan_specs
from orchestra.reconcile.scheduler import LEAD_RETRY, Scheduler
from orchestra.store import Leadership, Store, open_store
from tests.store_fixtures import FakeClock

POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process}\n"
T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


class World:
    """A spec directory, a store whose clock the test moves, and a scheduler."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "specs"
        self.root.mkdir()
        (self.root / "pool.yaml").write_text(POOL)
        self.clock = FakeClock(T0)
        self.store: Store = open_store(f"sqlite:///{tmp_path / 'o.db'}", clock=self.clock)
        self.scheduler = Scheduler(self.store)

    def deploy(self, spec: str, name: str = "job") -> None:
        body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
        (self.root / f"{name}.yaml").write_text(
            f"apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            f"  command: [echo, hi]\n  pool: local\n{body}\n")
        apply_plan(self.store, plan_specs(self.store, [self.root], prune=True, now=self.clock()))

    def at(self, when: datetime) -> datetime | None:
        self.clock.now = when
        return self.scheduler.tick(when)

    def work(self) -> None:
        """What a worker would do by now: every due run started and completed."""
        for run in self.store.claim_runs("local", now=self.clock.now, worker="w", max_count=1000):
            self.store.transition(run.id, "Running", "started", expect={"Pending"})
            self.store.transition(run.id, "Completed", "exit 0", expect={"Running"}, exit_code=0)

    def runs(self, deployment: str = "job") -> list[tuple[str, str]]:
        found = self.store.list_runs(deployment=deployment, limit=10_000)
        return sorted((r.slot_time.isoformat() if r.slot_time else "-", r.state) for r in found)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    yield w
    w.store.close()


def at(hh: int, mm: int, ss: int = 0, day: int = 1) -> datetime:
    return datetime(2030, 1, day, hh, mm, ss, tzinfo=UTC)


def test_due_slots_become_runs_and_tick_says_when_next(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    assert world.at(at(12, 0, 40)) == at(12, 1)
    assert world.runs() == []
    assert world.at(at(12, 1)) == at(12, 2)
    assert world.runs() == [("2030-01-01T12:01:00+00:00", "Scheduled")]
    run = world.store.list_runs()[0]
    assert run.idempotency_key == "job/interval:60s@1970-01-01T00:00:00Z/2030-01-01T12:01:00Z"
    assert run.trigger == "schedule" and run.scheduled_time == at(12, 1)


class Leads(Leadership):
    """A lead always held: two schedulers both materializing, as for the instant a lead
    passes on (a leader's lost connection noticed only at its next tick)."""

    def held(self) -> bool:
        return True


def test_restart_and_second_scheduler_never_double_a_slot(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 3))
    other = Scheduler(world.store, lead=Leads())  # a restarted daemon, or a second one leading too
    other.tick(at(12, 3))
    world.scheduler = Scheduler(world.store)
    world.at(at(12, 3, 30))
    slots = [s for s, _ in world.runs()]
    assert slots == sorted(set(slots)) and len(slots) == 3


def test_a_second_daemon_stands_by_while_the_first_leads_then_owes_every_slot(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 1))
    other = Scheduler(world.store)  # a second daemon on the same store
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(world.store.engine, "before_cursor_execute", seen)
    assert other.tick(at(12, 2, 30)) == at(12, 2, 30) + LEAD_RETRY  # standing by: it asks again in a second
    event.remove(world.store.engine, "before_cursor_execute", seen)
    assert statements == [], "standing by costs the store nothing"
    world.at(at(12, 2, 30))
    assert slot_times(world) == ["12:01", "12:02"]
    world.scheduler.close()  # the first daemon stops (or dies: its lock goes with it)
    other.tick(at(12, 4, 10))
    assert slot_times(world) == ["12:01", "12:02", "12:03", "12:04"]
    assert world.scheduler.tick(at(12, 5)) == at(12, 5) + LEAD_RETRY  # now the first one stands by


def test_downtime_is_accounted_for_by_policy_all(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 1))
    world.scheduler = Scheduler(world.store)  # the daemon was down 12:01 .. 12:10
    world.at(at(12, 10, 5))
    states = Counter(s for _, s in world.runs())
    assert states == {"Scheduled": 10}


def test_downtime_with_policy_latest_runs_only_the_newest(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 1))
    world.scheduler = Scheduler(world.store)
    world.at(at(12, 5, 1))
    assert world.runs() == [
        ("2030-01-01T12:01:00+00:00", "Scheduled"),
        ("2030-01-01T12:02:00+00:00", "Missed"),
        ("2030-01-01T12:03:00+00:00", "Missed"),
        ("2030-01-01T12:04:00+00:00", "Missed"),
        ("2030-01-01T12:05:00+00:00", "Scheduled"),
    ]


def test_clock_stepping_back_repeats_nothing(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 5))
    before = world.runs()
    world.at(at(12, 2))  # NTP stepped the clock back
    world.at(at(12, 4))
    assert world.runs() == before
    world.at(at(12, 6))
    assert len(world.runs()) == len(before) + 1


def test_paused_deployment_records_slots_as_skipped(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.store.set_paused_override("Deployment", "job", True)
    world.at(at(12, 2))
    assert {s for _, s in world.runs()} == {"Skipped"}
    reasons = {r.state_reason for r in world.store.list_runs()}
    assert reasons == {"deployment paused"}


def test_changed_schedule_withdraws_its_waiting_runs(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 1))
    world.deploy("schedules: [{interval: 2m}]")
    world.at(at(12, 1, 10))
    runs = world.store.list_runs()
    assert [(r.state, r.state_reason) for r in runs] == [("Cancelled", "schedule removed or changed")]


def test_on_limit_skip_records_the_slot_skipped(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nconcurrency: {limit: 1, onLimit: skip}")
    world.at(at(12, 1))
    world.at(at(12, 2))  # the 12:01 run still waits
    assert world.runs() == [("2030-01-01T12:01:00+00:00", "Scheduled"), ("2030-01-01T12:02:00+00:00", "Skipped")]


def test_on_limit_cancel_running_makes_room(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nconcurrency: {limit: 1, onLimit: cancel-running}")
    world.at(at(12, 1))
    world.at(at(12, 2))
    assert world.runs() == [("2030-01-01T12:01:00+00:00", "Cancelled"), ("2030-01-01T12:02:00+00:00", "Scheduled")]


def test_cron_across_dst_with_an_injected_clock(world: World) -> None:
    world.clock.now = datetime(2030, 3, 29, tzinfo=UTC)
    world.deploy("schedules: [{cron: '30 2 * * *', timezone: Europe/Berlin}]\nmissedRuns: {policy: all}")
    for day in range(29, 32):
        for hour in range(0, 24):
            world.at(datetime(2030, 3, day, hour, 59, tzinfo=UTC))
    # 2030-03-31 is the spring-forward day in Europe: 02:30 does not exist and fires at 03:00 CEST (01:00Z)
    assert world.runs() == [
        ("2030-03-29T01:30:00+00:00", "Scheduled"),
        ("2030-03-30T01:30:00+00:00", "Scheduled"),
        ("2030-03-31T01:00:00+00:00", "Scheduled"),
    ]


def test_idle_tick_makes_no_queries_beyond_the_marker(world: World) -> None:
    world.deploy("schedules: [{interval: 1h}]")
    world.at(at(12, 1))
    statements: list[str] = []

    def listener(*args: object) -> None:
        if args[2] != "BEGIN":  # SQLite reads open an explicit transaction
            statements.append(str(args[2]))

    event.listen(world.store.engine, "before_cursor_execute", listener)
    try:
        for second in range(2, 30):
            world.at(at(12, 1, second))
    finally:
        event.remove(world.store.engine, "before_cursor_execute", listener)
    assert len(statements) == 28 and all("revisions" in s for s in statements)  # one marker read per tick


def test_scheduled_runs_carry_the_deployment_policy(world: World) -> None:
    world.deploy("schedules: [{interval: 1m, parameters: {x: 2}}]\nparameters: {x: 1, y: 1}\n"
                 "retries: {count: 2, delay: 30s}\ntimeout: 5m")
    world.at(at(12, 1))
    run = world.store.list_runs()[0]
    assert (run.max_attempts, run.retry_delay_seconds, run.timeout_seconds) == (3, 30.0, 300.0)
    assert run.parameters == {"x": 2, "y": 1}
    assert timedelta(0) == run.scheduled_time - at(12, 1)


def test_a_zero_retry_delay_retries_at_once(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nretries: {count: 1, delay: 0s}")
    world.at(at(12, 1))
    assert world.store.list_runs()[0].retry_delay_seconds == 0.0


# --- runs made ahead of their slot ------------------------------------------------------------------------------------

AHEAD = timedelta(seconds=0.5)


def ahead(world: World, when: datetime) -> datetime | None:
    world.clock.now = when
    return world.scheduler.tick(when, AHEAD)


def test_the_next_run_is_made_ahead_of_its_slot_once_and_not_due_before_it(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    assert ahead(world, at(12, 0, 40)) == at(12, 1) - AHEAD  # the tick that makes it
    assert world.runs() == []
    assert ahead(world, at(12, 1) - AHEAD) == at(12, 2) - AHEAD
    assert world.runs() == [("2030-01-01T12:01:00+00:00", "Scheduled")]
    assert world.store.next_due_time("local") == at(12, 1)  # the worker sleeps until the slot...
    assert world.store.claim_runs("local", now=at(12, 1) - AHEAD, worker="w", max_count=10) == []  # ...not before
    ahead(world, at(12, 1))
    Scheduler(world.store).tick(at(12, 1, 10), AHEAD)  # a restart in between doubles nothing
    assert world.runs() == [("2030-01-01T12:01:00+00:00", "Scheduled")]
    [run] = world.store.claim_runs("local", now=at(12, 1), worker="w", max_count=10)
    assert run.scheduled_time == run.slot_time == at(12, 1)


def test_slots_whose_fate_depends_on_the_moment_are_decided_at_the_slot(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nconcurrency: {limit: 1, onLimit: cancel-running}", name="cancelling")
    world.deploy("schedules: [{interval: 1m}]", name="paused")
    world.store.set_paused_override("Deployment", "paused", True)
    assert ahead(world, at(12, 1) - AHEAD) == at(12, 1)  # neither is made ahead: the next tick is the slot's
    assert world.runs("cancelling") == [] and world.runs("paused") == []
    ahead(world, at(12, 1))
    assert world.runs("cancelling") == [("2030-01-01T12:01:00+00:00", "Scheduled")]
    assert world.runs("paused") == [("2030-01-01T12:01:00+00:00", "Skipped")]


def test_a_run_made_ahead_is_skipped_when_its_schedule_is_paused_before_the_slot(world: World) -> None:
    world.deploy("schedules: [{interval: 1m, name: every-minute}]", name="job")
    world.deploy("schedules: [{interval: 1m}]", name="other")
    ahead(world, at(12, 1) - AHEAD)
    world.store.set_schedule_paused("job", "every-minute", True)
    world.store.set_paused_override("Deployment", "other", True)
    ahead(world, at(12, 1) - AHEAD / 2)
    assert [(r.state, r.state_reason) for r in world.store.list_runs(deployment="job")] == [
        ("Skipped", "schedule paused")]
    assert [(r.state, r.state_reason) for r in world.store.list_runs(deployment="other")] == [
        ("Skipped", "deployment paused")]
    ahead(world, at(12, 2))  # and the slots owed while paused are skipped as before
    assert world.runs("job") == [("2030-01-01T12:01:00+00:00", "Skipped"), ("2030-01-01T12:02:00+00:00", "Skipped")]


def slot_times(world: World) -> list[str]:
    return [slot[11:16] for slot, _ in world.runs()]


def test_a_schedule_changed_away_and_back_owes_nothing_for_the_time_it_was_gone(world: World) -> None:
    """A slot is owed only while its schedule is in the spec: changing it and changing it back a
    while later must not run (nor record Missed) every slot of the time in between."""
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 2))
    world.work()
    world.clock.now = at(12, 2, 30)
    world.deploy("schedules: [{interval: 2m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 4))
    world.work()
    world.clock.now = at(12, 30, 30)  # changed back half an hour later, while no daemon ran
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.scheduler = Scheduler(world.store)
    world.at(at(12, 31))
    assert slot_times(world) == ["12:01", "12:02", "12:04", "12:31"]


def test_a_deployment_deleted_and_made_again_starts_afresh(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 2))
    world.work()
    (world.root / "job.yaml").unlink()
    world.clock.now = at(12, 2, 30)
    apply_plan(world.store, plan_specs(world.store, [world.root], prune=True, now=world.clock()))
    world.at(at(12, 10))
    world.clock.now = at(13, 0, 30)
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(13, 1))
    assert slot_times(world) == ["12:01", "12:02", "13:01"]


def test_a_schedule_made_inactive_and_active_again_owes_nothing_in_between(world: World) -> None:
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 1))
    world.work()
    world.clock.now = at(12, 1, 30)
    world.deploy("schedules: [{interval: 1m, active: false}]")
    world.at(at(12, 5))
    world.clock.now = at(12, 20, 30)
    world.deploy("schedules: [{interval: 1m}]")
    world.at(at(12, 21))
    assert slot_times(world) == ["12:01", "12:21"]


def test_an_unchanged_schedule_still_owes_the_slots_of_downtime_across_other_edits(world: World) -> None:
    """Only the schedule's own absence bounds what it owes: an edit of anything else does not."""
    world.deploy("schedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.at(at(12, 1))
    world.work()
    world.clock.now = at(12, 5, 30)  # the daemon is down; the deployment's parameters change
    world.deploy("parameters: {x: 1}\nschedules: [{interval: 1m}]\nmissedRuns: {policy: all}")
    world.scheduler = Scheduler(world.store)
    world.at(at(12, 6))
    assert slot_times(world) == ["12:01", "12:02", "12:03", "12:04", "12:05", "12:06"]
