"""``--keep-runs``: runs over for longer are deleted with their events and logs, and no slot runs twice.

The store's choice of runs runs on SQLite and PostgreSQL; the sweep against a
real scheduler; the option against a real daemon.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from store_fixtures import T0, FakeClock, clock_fixture, db_url_fixture, new_run, scheduled, store_fixture  # noqa: F401

from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.errors import StoreError
from orchestra.reconcile.retention import MAX_POSTPONE, RETRY_AFTER_ERROR, RunRetention
from orchestra.reconcile.scheduler import Scheduler
from orchestra.store import Run, Store, open_store
from tests.daemon_fixtures import daemon_factory, wait_for, workdir  # noqa: F401
from tests.test_scheduler import World, at

MONTH = timedelta(days=30)


def finished(store: Store, clock: FakeClock, state: str = "Completed", **kw: object) -> Run:
    """A run made (and ended) at the clock's time; the clock then moves a second on."""
    run = store.create_run(new_run(**kw))  # type: ignore[arg-type]
    if state in ("Completed", "Failed", "Crashed"):
        store.transition(run.id, "Pending", "claimed")
        store.transition(run.id, "Running", "started")
    run = store.transition(run.id, state, "over")
    clock.advance(1)
    return run


def slot(store: Store, clock: FakeClock, minute: int, identity: str = "interval:60s") -> Run:
    when = T0 + timedelta(minutes=minute)
    store.insert_scheduled_runs([scheduled("etl", when, identity)])
    run = next(r for r in store.list_runs(deployment="etl") if r.slot_time == when and r.schedule_identity == identity)
    store.transition(run.id, "Skipped", "deployment paused")
    clock.advance(1)
    return run


def over_long_ago(store: Store, clock: FakeClock, count: int) -> None:
    """``count`` runs that ended two months before the clock's new time, and a new run
    after them (the store's newest event is not theirs)."""
    for _ in range(count):
        finished(store, clock)
    clock.advance(MONTH.total_seconds() * 2)
    store.create_run(new_run())


def event_count(store: Store, run_id: str) -> int:
    return len(store.events(run_id))


# -- which runs the store gives up ---------------------------------------------------


def test_runs_over_before_the_cutoff_go_oldest_first_with_their_events(store: Store, clock: FakeClock) -> None:
    done, failed, cancelled = (finished(store, clock, state) for state in ("Completed", "Failed", "Cancelled"))
    running = store.transition(store.create_run(new_run()).id, "Pending", "claimed")
    waiting = store.create_run(new_run(when=T0 - timedelta(days=90)))  # owed for long, never started
    clock.advance(MONTH.total_seconds())
    recent = finished(store, clock)
    cutoff = clock.now - MONTH + timedelta(seconds=1)  # the first three ended a month and more ago
    assert store.forgettable_runs(cutoff, 2) == [done.id, failed.id]
    assert store.forgettable_runs(cutoff, 100) == [done.id, failed.id, cancelled.id]
    assert event_count(store, done.id) == 4  # made, Pending, Running, Completed
    assert store.forget_runs([done.id, failed.id, cancelled.id, running.id, waiting.id]) == 3
    left = {run.id for run in store.list_runs(limit=100)}
    assert left == {running.id, waiting.id, recent.id}
    assert [event_count(store, run_id) for run_id in (done.id, failed.id, cancelled.id)] == [0, 0, 0]
    assert event_count(store, recent.id) == 4


def test_the_latest_slot_of_each_schedule_stays(store: Store, clock: FakeClock) -> None:
    first, second, last = (slot(store, clock, minute) for minute in (1, 2, 3))
    other_last = slot(store, clock, 1, identity="cron:0 * * * * UTC")
    manual = finished(store, clock)
    schedules = [("etl", "interval:60s"), ("etl", "cron:0 * * * * UTC")]
    before = store.last_slots(schedules)
    clock.advance(MONTH.total_seconds() * 2)
    cutoff = clock.now - MONTH
    assert set(store.forgettable_runs(cutoff, 100)) == {first.id, second.id}
    store.forget_runs(store.forgettable_runs(cutoff, 100))
    assert store.last_slots(schedules) == before
    assert {r.id for r in store.list_runs(limit=100)} == {last.id, other_last.id, manual.id}


def test_the_run_with_the_newest_event_stays_so_event_ids_never_go_back(store: Store, clock: FakeClock) -> None:
    old = finished(store, clock)
    clock.advance(MONTH.total_seconds() * 2)
    assert store.forgettable_runs(clock.now - MONTH, 10) == []  # its end is the store's newest event
    store.create_run(new_run())  # anything newer
    assert store.forgettable_runs(clock.now - MONTH, 10) == [old.id]


# -- the sweep, against the scheduler ---------------------------------------------------


def test_a_sweep_never_lets_a_slot_run_twice(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        world.deploy("schedules: [{interval: 1m}]")
        for minute in range(1, 6):
            world.at(at(12, minute))
        for run in world.store.list_runs(limit=100):
            world.store.transition(run.id, "Skipped", "not wanted")
        logs = tmp_path / "logs"
        logs.mkdir()
        for run in world.store.list_runs(limit=100):
            (logs / f"{run.id}.log").write_text("output\n")
        (logs / "someone-else.log").write_text("not a run's\n")
        world.store.create_run(new_run("other", when=at(12, 6)))  # the newest event, elsewhere
        world.clock.now = at(12, 5, 30, day=3)
        retention = RunRetention(world.store, timedelta(days=1), logs, batch=3)
        assert retention.sweep(world.clock.now) == (3, True)
        assert retention.sweep(world.clock.now) == (1, False)  # the 12:05 slot is the schedule's last
        assert world.runs() == [("2030-01-01T12:05:00+00:00", "Skipped")]
        kept = world.store.list_runs(deployment="job")[0]
        assert sorted(p.name for p in logs.iterdir()) == sorted([f"{kept.id}.log", "someone-else.log"])
        world.scheduler = Scheduler(world.store)  # a restarted daemon
        world.at(at(12, 5, 45, day=3))
        slots = [s for s, _ in world.runs()]  # 12:05 and the slots owed since (recorded Skipped)
        assert slots[0] == "2030-01-01T12:05:00+00:00" and len(slots) == len(set(slots))  # none made again
    finally:
        world.store.close()


def test_sweeps_come_back_soon_while_a_backlog_lasts(store: Store, clock: FakeClock) -> None:
    over_long_ago(store, clock, 5)
    seconds = [0.0]
    retention = RunRetention(store, MONTH, None, batch=2, interval=600.0, monotonic=lambda: seconds[0])
    deleted = []
    for moment in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 500.0):
        seconds[0] = moment
        deleted.append(retention.maybe_sweep(clock.now))
    # full batches a second apart, then the last one, then nothing to do until ten minutes later
    assert deleted == [2, 0, 2, 0, 1, 0, 0]
    over_long_ago(store, clock, 1)
    seconds[0] = 602.0
    assert retention.maybe_sweep(clock.now) == 1


def test_a_sweep_waits_for_a_quiet_moment_but_not_forever(store: Store, clock: FakeClock) -> None:
    over_long_ago(store, clock, 3)
    seconds = [0.0]
    retention = RunRetention(store, MONTH, None, monotonic=lambda: seconds[0])
    assert retention.maybe_sweep(clock.now, quiet=False) == 0  # something is about to start
    seconds[0] = MAX_POSTPONE - 1
    assert retention.maybe_sweep(clock.now, quiet=False) == 0
    seconds[0] = MAX_POSTPONE + 1  # always something about to start: it goes anyway
    assert retention.maybe_sweep(clock.now, quiet=False) == 3


def test_the_daemon_sweeps_when_nothing_is_about_to_start(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    clock = FakeClock(T0 - timedelta(days=60))
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}", clock=clock)
    try:
        for _ in range(6):
            finished(store, clock)
        clock.now = T0 - timedelta(milliseconds=200)
        anchor = T0.isoformat()
        (specs / "all.yaml").write_text(
            "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process}\n---\n"
            "apiVersion: orchestra/v1\nkind: Deployment\nmetadata: {name: tick}\n"
            f"spec: {{pool: local, command: ['true'], schedules: [{{interval: 1m, anchor: '{anchor}'}}]}}\n")
        settings = DaemonSettings(paths=[specs], watch=False, keep_runs=MONTH, prepare_ahead=0)
        daemon = Daemon(store, None, settings, clock=clock)
        seconds = [0.0]
        daemon.retention = RunRetention(store, MONTH, None, batch=2, monotonic=lambda: seconds[0])
        daemon.start()

        def old_runs_left() -> int:
            return sum(1 for run in store.list_runs(limit=100) if run.deployment == "etl")

        daemon.run_once()  # nothing known to be due yet: a sweep
        assert old_runs_left() == 4
        seconds[0] += 5
        daemon.run_once()  # the 12:00 slot is due in 0.2 s: no sweep
        assert old_runs_left() == 4
        clock.advance(5)
        daemon.run_once()  # the slot is past; the pass learns that the next is a minute away
        assert old_runs_left() == 4
        daemon.run_once()
        assert old_runs_left() == 2
    finally:
        store.close()


class UnwritableStore:
    """A store whose deletes fail (a full disk, a lost connection): hard to make for real here
    without breaking the rest of the test's store, and only the failure matters."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def forgettable_runs(self, ended_before: object, limit: int) -> list[str]:
        return self.store.forgettable_runs(ended_before, limit)  # type: ignore[arg-type]

    def forget_runs(self, run_ids: object) -> int:
        raise StoreError("disk I/O error")


def test_a_failed_sweep_is_logged_and_tried_again_later_without_failing_the_pass(
        store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    over_long_ago(store, clock, 1)
    seconds = [0.0]
    retention = RunRetention(UnwritableStore(store), MONTH, None, monotonic=lambda: seconds[0])  # type: ignore[arg-type]
    assert retention.maybe_sweep(clock.now) == 0
    assert "deleting old runs failed; trying again in 60s" in caplog.text
    seconds[0] = RETRY_AFTER_ERROR - 1
    retention.store = store  # the disk has room again
    assert retention.maybe_sweep(clock.now) == 0  # not yet
    seconds[0] = RETRY_AFTER_ERROR
    assert retention.maybe_sweep(clock.now) == 1


# -- the option -------------------------------------------------------------------


def test_a_daemon_with_keep_runs_deletes_old_runs_and_their_logs(workdir: Path, daemon_factory) -> None:  # noqa: F811
    url = f"sqlite:///{workdir / 'orchestra.db'}"
    logs = workdir / ".orchestra" / "logs"
    logs.mkdir(parents=True)
    clock = FakeClock(T0 - timedelta(days=3650))  # the store's clock: these runs ended ten years before T0
    with open_store(url, clock=clock) as store:
        old = [finished(store, clock) for _ in range(3)]
    with open_store(url) as store:  # and these just now
        recent = [finished(store, FakeClock()) for _ in range(2)]
    for run in old + recent:
        (logs / f"{run.id}.log").write_text("output\n")
    daemon = daemon_factory("--keep-runs", "30d").start()
    daemon.ready()
    with open_store(url) as store:
        wait_for(lambda: len(store.list_runs(limit=100)) == 2, timeout=20, message="the old runs deleted")
        assert {r.id for r in store.list_runs(limit=100)} == {r.id for r in recent}
    assert sorted(p.name for p in logs.glob("*.log")) == sorted(f"{r.id}.log" for r in recent)
    assert "deleted 3 run(s) over for more than 30d" in daemon.output()
    assert daemon.stop() == 0


@pytest.mark.parametrize("value", ["soon", "0s", "-1d"])
def test_keep_runs_must_be_a_positive_duration(workdir: Path, daemon_factory, value: str) -> None:  # noqa: F811
    result = daemon_factory().cli("daemon", "specs", "--no-api", "--keep-runs", value)
    assert result.returncode == 64  # a usage error
    assert "--keep-runs" in result.stderr
