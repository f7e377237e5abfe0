"""The store's paged lists and aggregates behind the web UI (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from store_fixtures import (  # noqa: F401
    T0,
    FakeClock,
    clock_fixture,
    db_url_fixture,
    deployment,
    new_run,
    pool,
    queue,
    resource,
    store_fixture,
)

from orchestra.store import Store


def labelled(name: str, pool_name: str, **labels: str) -> object:
    write = deployment(name, pool_name)
    return type(write)(**{**write.__dict__, "metadata": {"name": name, "labels": labels}})


def test_page_resources_filters_by_name_pool_and_labels_and_counts_all_matches(store: Store) -> None:
    store.apply_resources([pool("local"), pool("gpu"), queue("critical"),
                           labelled("etl-a", "local", team="data"), labelled("etl-b", "gpu", team="data"),
                           labelled("report", "local", team="ops"), labelled("etl_c", "local")])
    page = store.page_resources("Deployment", name="ETL", limit=2)
    assert [r.name for r in page.items] == ["etl-a", "etl-b"] and page.total == 3
    assert [r.name for r in store.page_resources("Deployment", name="etl", offset=2).items] == ["etl_c"]
    assert [r.name for r in store.page_resources("Deployment", name="_").items] == ["etl_c"]  # no LIKE wildcard
    assert [r.name for r in store.page_resources("Deployment", pool="local", labels={"team": "data"}).items] == ["etl-a"]
    assert store.page_resources("Deployment", labels={"team": "nobody"}).total == 0
    assert [r.name for r in store.page_resources("WorkPool", pool="gpu").items] == ["gpu"]


def test_latest_runs_are_the_last_due_run_of_each_deployment(store: Store, clock: FakeClock) -> None:
    store.create_run(new_run("a", T0 - timedelta(hours=2)))
    last_a = store.create_run(new_run("a", T0 - timedelta(hours=1)))
    store.create_run(new_run("a", T0 + timedelta(hours=1)))  # not due yet: not "last"
    last_b = store.create_run(new_run("b", T0))
    store.create_run(new_run("c", T0))
    latest = store.latest_runs(["a", "b", "missing"], T0)
    assert {name: run.id for name, run in latest.items()} == {"a": last_a.id, "b": last_b.id}
    assert store.latest_runs([], T0) == {}


def test_runs_per_hour_count_by_creation_hour_and_state(store: Store, clock: FakeClock) -> None:
    clock.now = T0 - timedelta(hours=30)
    store.create_run(new_run("old"))  # before the window
    clock.now = T0 - timedelta(hours=2, minutes=10)
    first = store.create_run(new_run("a"))
    store.create_run(new_run("a"))
    clock.now = T0 - timedelta(minutes=5)
    store.create_run(new_run("a"))
    store.transition(first.id, "Cancelled", "test")
    counts = {(c.hour, c.state): c.count for c in store.runs_per_hour(T0 - timedelta(hours=24))}
    two_hours_ago = (T0 - timedelta(hours=3)).replace(minute=0) + timedelta(hours=1)
    assert counts == {(two_hours_ago - timedelta(hours=1), "Cancelled"): 1,
                      (two_hours_ago - timedelta(hours=1), "Scheduled"): 1,
                      (T0 - timedelta(hours=1), "Scheduled"): 1}


def test_queue_load_counts_active_due_and_later_runs(store: Store) -> None:
    for _ in range(2):
        store.transition(store.create_run(new_run("a", T0, queue="critical")).id, "Pending", "claimed")
    store.create_run(new_run("a", T0 - timedelta(minutes=1), queue="critical"))
    store.create_run(new_run("b", T0 + timedelta(hours=1)))
    done = store.create_run(new_run("b", T0))
    store.transition(done.id, "Cancelled", "test")
    loads = {(q.pool, q.queue): (q.active, q.due, q.later) for q in store.queue_load(T0)}
    assert loads == {("local", "critical"): (2, 1, 0), ("local", "default"): (0, 0, 1)}


def test_late_runs_are_scheduled_runs_overdue_oldest_first(store: Store) -> None:
    older = store.create_run(new_run("a", T0 - timedelta(hours=1)))
    newer = store.create_run(new_run("b", T0 - timedelta(minutes=10)))
    store.create_run(new_run("c", T0))
    assert [r.id for r in store.late_runs(T0 - timedelta(minutes=1))] == [older.id, newer.id]
    assert [r.id for r in store.late_runs(T0 - timedelta(minutes=1), limit=1)] == [older.id]


def test_each_list_is_one_query(store: Store) -> None:
    store.apply_resources([pool("local")] + [deployment(f"d{i}") for i in range(30)])
    for i in range(30):
        store.create_run(new_run(f"d{i}", T0))
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        page = store.page_resources("Deployment", limit=25)
        store.latest_runs([r.name for r in page.items], T0)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # count, page, last runs: not one per deployment
