"""Resources: upsert rules, runtime pause override, delete, bulk apply in one transaction."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from store_fixtures import FakeClock, clock_fixture, db_url_fixture, deployment, new_run, pool, resource, store_fixture  # noqa: F401

from orchestra.errors import NotFound
from orchestra.store import Store


def test_new_resource_starts_at_generation_one(store: Store, clock: FakeClock) -> None:
    store.apply_resources([resource("WorkPool", "local", {"type": "process"}, "h1", source_line=3)], [])
    stored = store.get_resource("WorkPool", "local")
    assert (stored.kind, stored.name, stored.generation, stored.content_hash) == ("WorkPool", "local", 1, "h1")
    assert (stored.spec, stored.metadata) == ({"type": "process"}, {"name": "local"})
    assert (stored.source_file, stored.source_line, stored.manager) == ("specs/all.yaml", 3, "specs")
    assert stored.paused_override is None and stored.paused is False
    assert stored.created_at == stored.updated_at == clock.now


def test_same_hash_only_moves_the_source(store: Store, clock: FakeClock) -> None:
    store.apply_resources([resource("WorkPool", "local", {"type": "process"}, "h1", source_line=3)], [])
    clock.advance(60)
    moved = resource("WorkPool", "local", {"type": "process"}, "h1", source_file="specs/pools.yaml", source_line=9)
    store.apply_resources([moved], [])
    stored = store.get_resource("WorkPool", "local")
    assert (stored.generation, stored.source_file, stored.source_line) == (1, "specs/pools.yaml", 9)
    assert stored.updated_at == clock.now


def test_identical_apply_changes_nothing(store: Store, clock: FakeClock) -> None:
    write = resource("WorkPool", "local", {"type": "process"}, "h1")
    store.apply_resources([write], [])
    before = store.get_resource("WorkPool", "local")
    clock.advance(60)
    store.apply_resources([write], [])
    assert store.get_resource("WorkPool", "local") == before


def test_changed_hash_replaces_content_and_bumps_generation(store: Store, clock: FakeClock) -> None:
    store.apply_resources([deployment("etl", paused=False)], [])
    store.set_paused_override("Deployment", "etl", True)
    clock.advance(60)
    store.apply_resources([deployment("etl", queue="critical")], [])
    stored = store.get_resource("Deployment", "etl")
    assert stored.generation == 2
    assert stored.spec == {"command": ["true"], "pool": "local", "queue": "critical"}
    assert stored.paused_override is True and stored.paused is True
    assert stored.created_at < stored.updated_at == clock.now
    store.apply_resources([deployment("etl", queue="other")], [])
    assert store.get_resource("Deployment", "etl").generation == 3


def test_paused_override_beats_the_spec_and_none_restores_it(store: Store) -> None:
    store.apply_resources([pool("local", paused=True)], [])
    assert store.get_resource("WorkPool", "local").paused is True
    assert store.set_paused_override("WorkPool", "local", False).paused is False
    assert store.set_paused_override("WorkPool", "local", None).paused is True


def test_set_paused_override_of_missing_resource(store: Store) -> None:
    with pytest.raises(NotFound, match="Deployment/nope"):
        store.set_paused_override("Deployment", "nope", True)


def test_get_missing_resource(store: Store) -> None:
    with pytest.raises(NotFound, match="WorkPool/nope not found"):
        store.get_resource("WorkPool", "nope")


def test_list_is_ordered_and_filters_by_kind(store: Store) -> None:
    store.apply_resources([deployment("b"), pool("local"), deployment("a"), resource("WorkQueue", "q", {})], [])
    assert [(r.kind, r.name) for r in store.list_resources()] == [
        ("Deployment", "a"), ("Deployment", "b"), ("WorkPool", "local"), ("WorkQueue", "q"),
    ]
    assert [r.name for r in store.list_resources("Deployment")] == ["a", "b"]
    assert store.list_resources("Automation") == []


def test_delete_removes_the_resource_but_runs_keep_their_deployment(store: Store) -> None:
    store.apply_resources([pool("local"), deployment("etl"), deployment("keep")], [])
    run = store.create_run(new_run("etl"))
    store.apply_resources([], [("Deployment", "etl")])
    assert [r.name for r in store.list_resources("Deployment")] == ["keep"]
    assert store.get_run(run.id).deployment == "etl"


def test_manager_is_recorded_and_checked(store: Store) -> None:
    store.apply_resources([resource("Deployment", "made-by-api", {"pool": "local"}, manager="api")], [])
    assert store.get_resource("Deployment", "made-by-api").manager == "api"
    with pytest.raises(ValueError, match="manager"):
        store.apply_resources([resource("Deployment", "x", {}, manager="ui")], [])


def test_duplicate_in_one_apply_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="Deployment/etl appears twice"):
        store.apply_resources([deployment("etl"), deployment("etl")], [])
    assert store.list_resources() == []


def count_statements(store: Store) -> list[str]:
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    return statements


def test_thousand_new_deployments_in_one_fast_bulk_apply(store: Store) -> None:
    writes = [deployment(f"d{i:04}", parameters={"i": i}) for i in range(1000)]
    statements = count_statements(store)
    started = time.perf_counter()
    store.apply_resources(writes, [])
    elapsed = time.perf_counter() - started
    assert len(store.list_resources("Deployment")) == 1000
    # read the stored hashes, one bulk insert (a few batched round trips at most)
    assert len([s for s in statements if not s.startswith(("BEGIN", "SELECT pg_"))]) <= 12
    assert elapsed < 1.0, f"apply of 1,000 deployments took {elapsed:.2f}s"


def test_apply_is_one_transaction(store: Store) -> None:
    """A failure late in the apply (an unserializable spec in the update batch,
    after the inserts ran) leaves the store exactly as it was."""
    store.apply_resources([deployment("old"), deployment("doomed")], [])
    before = store.list_resources()
    new = [deployment(f"d{i:04}") for i in range(1000)]
    broken = resource("Deployment", "old", {"pool": "local", "bad": object()}, "changed")
    with pytest.raises(TypeError):
        store.apply_resources([*new, broken], [("Deployment", "doomed")])
    assert store.list_resources() == before


def test_resource_marker_moves_only_on_change(store: Store) -> None:
    first = store.resource_marker()
    store.apply_resources([pool("local")], [])
    applied = store.resource_marker()
    assert applied > first
    store.apply_resources([pool("local")], [("Deployment", "never-existed")])
    assert store.resource_marker() == applied  # identical apply: nothing to re-read
    store.apply_resources([pool("local")], [])
    store.set_paused_override("WorkPool", "local", True)
    paused = store.resource_marker()
    assert paused > applied
    store.apply_resources([], [("WorkPool", "local")])
    assert store.resource_marker() > paused


def test_status_documents_by_key_prefix(store: Store) -> None:
    """Each daemon keeps a document of its own; a prefix lists them, its wildcards taken literally."""
    store.put_status("daemon:a:1", {"pid": 1})
    store.put_status("daemon:b:2", {"pid": 2})
    store.put_status("daemonXb:3", {"pid": 3})  # LIKE's "_" and "%" must not match here
    store.put_status("spec_status", {"ok": True})
    store.put_status("daemon:a:1", {"pid": 1, "again": True})  # overwritten, not added
    assert store.list_status("daemon:") == {"daemon:a:1": {"pid": 1, "again": True}, "daemon:b:2": {"pid": 2}}
    assert store.list_status("daemon_") == {}
    store.delete_status(["daemon:a:1", "missing"])
    store.delete_status([])
    assert list(store.list_status("daemon:")) == ["daemon:b:2"]
    assert store.get_status("spec_status") == {"ok": True}


def test_each_schedule_is_kept_with_when_it_came_into_its_spec(store: Store, clock: FakeClock) -> None:
    """What the scheduler needs to owe a schedule brought back nothing for the time it was gone."""
    hourly, daily = {"interval": "1h"}, {"cron": "0 6 * * *"}
    hourly_id, daily_id = "interval:3600s@1970-01-01T00:00:00Z", "cron:0 6 * * *@UTC"
    start = clock.now
    store.apply_resources([pool(), deployment("etl", schedules=[hourly, daily])], [])
    assert store.schedule_spans() == {("etl", hourly_id): start, ("etl", daily_id): start}
    clock.advance(60)
    store.apply_resources([pool(), deployment("etl", schedules=[hourly], parameters={"x": 1})], [])
    assert store.schedule_spans() == {("etl", hourly_id): start}, "kept through an edit; the removed one gone"
    clock.advance(60)
    store.apply_resources([pool(), deployment("etl", schedules=[hourly, {**daily, "active": False}])], [])
    assert store.schedule_spans() == {("etl", hourly_id): start}, "an inactive schedule owes nothing"
    clock.advance(60)
    store.apply_resources([pool(), deployment("etl", schedules=[hourly, daily])], [])
    assert store.schedule_spans() == {("etl", hourly_id): start, ("etl", daily_id): clock.now}
    store.apply_resources([], [("Deployment", "etl")])
    assert store.schedule_spans() == {}


def test_daemons_applying_the_same_specs_at_once_all_succeed(db_url: str) -> None:
    """Daemons watching one spec directory on one store apply each change at the same moment;
    on PostgreSQL each read the other's creates as not there yet and failed on the key."""
    import threading

    from orchestra.store import open_store

    stores = [open_store(db_url) for _ in range(4)]
    try:
        for round_ in range(3):  # creates, then changed schedules twice: both rows and spans collide
            writes = [pool()] + [deployment(f"d{i}", schedules=[{"interval": f"{round_ + 1}m"}]) for i in range(50)]
            barrier, errors = threading.Barrier(len(stores)), []

            def apply(store: Store, writes: list = writes, barrier: threading.Barrier = barrier,
                      errors: list = errors) -> None:
                try:
                    barrier.wait(timeout=30)
                    store.apply_resources(writes, [])
                except Exception as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(repr(exc))

            threads = [threading.Thread(target=apply, args=(store,)) for store in stores]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert errors == [], f"round {round_}"
        assert len(stores[0].list_resources("Deployment")) == 50
        assert {identity for _, identity in stores[0].schedule_spans()} == {"interval:180s@1970-01-01T00:00:00Z"}
    finally:
        for store in stores:
            store.close()
