"""API-managed resource writes, schedule pauses and ``events_after``, on every store dialect."""

from __future__ import annotations

import sqlalchemy as sa
import pytest
from store_fixtures import FakeClock, clock_fixture, db_url_fixture, deployment, new_run, pool, resource, store_fixture  # noqa: F401

from orchestra.errors import Conflict, NotFound
from orchestra.store import PENDING, RUNNING, Store


def _api(name: str, **spec: object) -> object:
    return resource("Deployment", name, {"command": ["true"], "pool": "local", **spec}, manager="api",
                    source_file=None, source_line=None)


def test_create_then_replace_an_api_resource_bumps_the_marker(store: Store) -> None:
    store.apply_resources([pool()], [])
    before = store.resource_marker()
    created = store.put_api_resource(_api("ingest"), replace=False)
    assert (created.manager, created.generation, created.source_file) == ("api", 1, None)
    assert store.resource_marker() > before
    replaced = store.put_api_resource(_api("ingest", timeout="1m"), replace=True)
    assert (replaced.generation, replaced.spec["timeout"]) == (2, "1m")


def test_api_writes_refuse_taken_missing_and_spec_managed_names(store: Store) -> None:
    spec_managed = resource("Deployment", "etl", {"command": ["true"], "pool": "local"},
                            source_file="specs/etl.yaml", source_line=3)
    store.apply_resources([pool(), spec_managed], [])
    with pytest.raises(Conflict, match="already exists"):
        store.put_api_resource(_api("etl"), replace=False)
    with pytest.raises(Conflict, match=r"Deployment/etl is managed by specs/etl.yaml:3; change it in git"):
        store.put_api_resource(_api("etl"), replace=True)
    with pytest.raises(Conflict, match="change it in git"):
        store.delete_api_resource("Deployment", "etl")
    with pytest.raises(NotFound):
        store.put_api_resource(_api("ghost"), replace=True)
    with pytest.raises(NotFound):
        store.delete_api_resource("Deployment", "ghost")
    assert store.get_resource("Deployment", "etl").manager == "specs"


def test_schedule_pause_is_a_row_per_schedule_and_bumps_the_marker(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    marker = store.resource_marker()
    assert store.set_schedule_paused("etl", "nightly", True) is True
    assert store.set_schedule_paused("etl", "nightly", True) is False  # already paused: nothing written
    assert store.resource_marker() == marker + 1
    store.set_schedule_paused("other", "cron:0 * * * *@UTC", True)
    assert store.paused_schedules() == {("etl", "nightly"), ("other", "cron:0 * * * *@UTC")}
    assert store.paused_schedules(["etl"]) == {("etl", "nightly")}
    assert store.set_schedule_paused("etl", "nightly", False) is True
    assert store.paused_schedules(["etl"]) == set()


def test_deleting_a_deployment_forgets_its_schedule_pauses(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    store.set_schedule_paused("etl", "nightly", True)
    store.apply_resources([], [("Deployment", "etl")])
    assert store.paused_schedules() == set()


def test_replacing_an_api_deployment_keeps_only_the_pauses_of_kept_schedules(store: Store) -> None:
    store.apply_resources([pool()], [])
    store.put_api_resource(_api("ingest"), replace=False)
    store.set_schedule_paused("ingest", "a", True)
    store.set_schedule_paused("ingest", "b", True)
    store.put_api_resource(_api("ingest", timeout="5m"), replace=True, schedules=["b"])
    assert store.paused_schedules() == {("ingest", "b")}


def test_events_after_reads_in_id_order_with_the_deployment(store: Store) -> None:
    first = store.create_run(new_run("etl"))
    second = store.create_run(new_run("load"))
    store.transition(first.id, PENDING, "claimed")
    store.transition(second.id, PENDING, "claimed")
    store.transition(first.id, RUNNING, "started")
    everything = store.events_after(0)
    ids = [e.id for e, _ in everything]
    assert ids == sorted(ids) and len(ids) == 5
    assert [(e.run_id, d) for e, d in everything[:2]] == [(first.id, "etl"), (second.id, "load")]
    later = store.events_after(ids[1], limit=2)
    assert [e.id for e, _ in later] == ids[2:4]
    assert store.events_after(ids[-1]) == []


def test_the_event_id_range_scan_uses_the_primary_key(store: Store) -> None:
    query = "SELECT * FROM run_events WHERE id > 5 ORDER BY id LIMIT 10"
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            plan = " ".join(str(row[-1]) for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {query}")))
            assert "USING INTEGER PRIMARY KEY" in plan, plan
        else:  # an empty table makes a sequential scan the cheapest: ask whether an index scan exists at all
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(row[0]) for row in conn.execute(sa.text(f"EXPLAIN {query}")))
            assert "run_events_pkey" in plan, plan
