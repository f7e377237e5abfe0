"""Dispatch: limits, order, pauses, explanations, and concurrent claimers."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from store_fixtures import (  # noqa: F401
    T0,
    FakeClock,
    claim_and_finish,
    clock_fixture,
    db_url_fixture,
    deployment,
    new_run,
    pool,
    process_worker,
    queue,
    scheduled,
    store_fixture,
)

from orchestra.store import READY, Run, Store, open_store

NOW = T0 + timedelta(hours=1)


def due(store: Store, deployment_name: str, minutes_ago: float, queue_name: str = "default", **kw: object) -> Run:
    return store.create_run(new_run(deployment_name, NOW - timedelta(minutes=minutes_ago), queue=queue_name, **kw))  # type: ignore[arg-type]


def claim(store: Store, max_count: int = 100, worker: str = "w1") -> list[Run]:
    return store.claim_runs("local", now=NOW, worker=worker, max_count=max_count)


def names(runs: list[Run]) -> list[str]:
    return [r.deployment for r in runs]


def finish(store: Store, run: Run) -> None:
    store.transition(run.id, "Running", "started")
    store.transition(run.id, "Completed", "exit 0")


def test_claimed_runs_are_pending_with_a_lease_and_an_event(store: Store, clock: FakeClock) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    run = due(store, "etl", 5)
    (claimed,) = store.claim_runs("local", now=NOW, worker="w1", max_count=5, lease_seconds=45)
    assert (claimed.id, claimed.state, claimed.worker) == (run.id, "Pending", "w1")
    assert claimed.lease_expires_at == NOW + timedelta(seconds=45)
    assert claimed.state_reason == "claimed by w1"
    assert claimed == store.get_run(run.id)
    event = store.events(run.id)[-1]
    assert (event.from_state, event.to_state, event.time) == ("Scheduled", "Pending", clock.now)
    assert event.reason == "claimed by w1"
    assert claim(store) == []


def test_future_runs_and_other_pools_are_not_claimed(store: Store) -> None:
    store.apply_resources([pool(), pool("docker"), deployment("etl")], [])
    due(store, "etl", -1)
    store.create_run(new_run("etl", NOW, pool="docker"))
    assert claim(store) == []
    exact = due(store, "etl", 0)
    assert [r.id for r in claim(store)] == [exact.id]


def test_max_count(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl")], [])
    for m in range(5):
        due(store, "etl", m)
    assert len(claim(store, max_count=2)) == 2
    assert claim(store, max_count=0) == []
    assert len(claim(store, max_count=10)) == 3


def test_pool_limit(store: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=2), deployment("etl")], [])
    for m in range(5):
        due(store, "etl", m)
    first = claim(store)
    assert len(first) == 2 and claim(store) == []
    finish(store, first[0])
    assert len(claim(store)) == 1


def test_queue_limit(store: Store) -> None:
    store.apply_resources([pool(), queue("critical", priority=1, concurrencyLimit=1), deployment("etl")], [])
    for m in range(3):
        due(store, "etl", m, "critical")
        due(store, "etl", m + 10)
    claimed = claim(store)
    assert sorted(r.queue for r in claimed) == ["critical", "default", "default", "default"]


def test_deployment_limit_spans_queues(store: Store) -> None:
    store.apply_resources([pool(), queue("critical", priority=1), deployment("etl", concurrency={"limit": 1}),
                           deployment("other")], [])
    due(store, "etl", 1, "critical")
    due(store, "etl", 2)
    due(store, "other", 3)
    assert sorted(names(claim(store))) == ["etl", "other"]
    assert claim(store) == []


def test_all_limits_hold_at_once(store: Store) -> None:
    store.apply_resources([
        pool(concurrencyLimit=4),
        queue("critical", priority=1, concurrencyLimit=2),
        deployment("a", concurrency={"limit": 1}), deployment("b"), deployment("c", concurrency={"limit": 2}),
    ], [])
    for m in range(3):
        for name in ("a", "b", "c"):
            due(store, name, m, "critical")
            due(store, name, m + 10)
    claimed = claim(store)
    assert len(claimed) == 4
    assert sum(r.queue == "critical" for r in claimed) <= 2
    assert names(claimed).count("a") <= 1 and names(claimed).count("c") <= 2


def test_order_is_priority_then_time_then_creation(store: Store, clock: FakeClock) -> None:
    store.apply_resources([pool(), queue("low", priority=50), queue("high", priority=1), deployment("etl")], [])
    d1 = due(store, "etl", 60)             # default queue, oldest of all: still last
    l1 = due(store, "etl", 5, "low")
    h2 = due(store, "etl", 1, "high")
    h1 = due(store, "etl", 2, "high")
    clock.advance(1)
    h1b = due(store, "etl", 2, "high")     # same time as h1, created later
    assert [r.id for r in claim(store)] == [h1.id, h1b.id, h2.id, l1.id, d1.id]


def test_equal_priority_queues_share_one_time_order(store: Store) -> None:
    store.apply_resources([pool(), queue("x", priority=5), queue("y", priority=5), deployment("etl")], [])
    runs = [due(store, "etl", 4, "y"), due(store, "etl", 3, "x"), due(store, "etl", 2, "y")]
    assert [r.id for r in claim(store)] == [r.id for r in runs]


def test_declared_default_queue_takes_its_priority(store: Store) -> None:
    store.apply_resources([pool(), queue("default", priority=0, concurrencyLimit=1), queue("q", priority=1),
                           deployment("etl")], [])
    first_default = due(store, "etl", 2)
    due(store, "etl", 1)
    q = due(store, "etl", 9, "q")
    assert [r.id for r in claim(store)] == [first_default.id, q.id]


@pytest.mark.parametrize("how", ["spec", "override"])
def test_paused_pool_queue_and_deployment(store: Store, how: str) -> None:
    spec_paused = {"paused": True} if how == "spec" else {}
    store.apply_resources([pool(), queue("critical", priority=1, **spec_paused), deployment("etl", **spec_paused),
                           deployment("free")], [])
    if how == "override":
        store.set_paused_override("WorkQueue", "critical", True)
        store.set_paused_override("Deployment", "etl", True)
    due(store, "free", 1, "critical")
    due(store, "etl", 1)
    free = due(store, "free", 2)
    assert [r.id for r in claim(store)] == [free.id]
    due(store, "free", 3)
    store.set_paused_override("WorkPool", "local", True)
    assert claim(store) == []
    store.set_paused_override("WorkPool", "local", None)
    store.set_paused_override("WorkQueue", "critical", False)
    assert names(claim(store)) == ["free", "free"]


def test_override_can_unpause_a_spec_paused_deployment(store: Store) -> None:
    store.apply_resources([pool(), deployment("etl", paused=True)], [])
    due(store, "etl", 1)
    assert claim(store) == []
    store.set_paused_override("Deployment", "etl", False)
    assert names(claim(store)) == ["etl"]


def test_missing_pool_queue_or_deployment_waits(store: Store) -> None:
    store.apply_resources([deployment("etl")], [])
    due(store, "etl", 1)
    assert claim(store) == []
    store.apply_resources([pool()], [])
    due(store, "etl", 2, "removed-queue")
    due(store, "deleted", 3)
    assert names(claim(store)) == ["etl"]


def test_explain_waiting(store: Store) -> None:
    store.apply_resources([
        pool(concurrencyLimit=4),
        queue("critical", priority=1, concurrencyLimit=2), queue("held", priority=2),
        deployment("etl", concurrency={"limit": 1}), deployment("paused", paused=True), deployment("free"),
    ], [])
    store.set_paused_override("WorkQueue", "held", True)
    runs = [
        due(store, "free", 9, "critical"),    # ready
        due(store, "etl", 8, "critical"),     # ready (etl's one slot)
        due(store, "free", 7, "critical"),    # critical now full
        due(store, "free", 6, "held"),        # queue paused
        due(store, "etl", 5),                 # etl full
        due(store, "paused", 4),              # deployment paused
        due(store, "free", 3),                # ready: pool at 3
        due(store, "free", 2),                # ready: pool at 4
        due(store, "free", 1),                # pool full
        due(store, "free", 0, "nowhere"),     # unknown queue, listed last
    ]
    explained = store.explain_waiting("local", NOW)
    assert [(r.id, reason) for r, reason in explained] == list(zip([r.id for r in runs], [
        READY, READY, "queue limit 2 reached", "queue 'held' paused", "deployment concurrency 1",
        "deployment 'paused' paused", READY, READY, "pool limit 4 reached",
        "queue 'nowhere' does not exist in pool 'local'",
    ], strict=True))
    assert all(r.state == "Scheduled" for r in store.list_runs())  # explaining changes nothing
    ready = [r.id for r, reason in explained if reason == READY]
    assert [r.id for r in claim(store)] == ready
    # Now the pool is full; standing reasons (paused, does not exist) still come first.
    assert [reason for _, reason in store.explain_waiting("local", NOW)] == [
        "pool limit 4 reached", "queue 'held' paused", "pool limit 4 reached",
        "deployment 'paused' paused", "pool limit 4 reached", "queue 'nowhere' does not exist in pool 'local'",
    ]
    store.set_paused_override("WorkPool", "local", True)
    assert {reason for _, reason in store.explain_waiting("local", NOW)} == {"pool paused"}
    assert store.explain_waiting("local", NOW, limit=2) == store.explain_waiting("local", NOW)[:2]
    assert store.explain_waiting("nope", NOW) == []


def test_explain_missing_pool(store: Store) -> None:
    store.apply_resources([deployment("etl")], [])
    due(store, "etl", 1)
    assert [reason for _, reason in store.explain_waiting("local", NOW)] == ["pool 'local' does not exist"]


def count_selects(store: Store) -> list[str]:
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda *a: statements.append(a[2]) if "FROM runs" in a[2] else None)
    return statements


def test_a_claim_reads_only_what_the_pool_has_room_for(store: Store) -> None:
    """100 due runs of 100 deployments, a pool of limit 3: the claim reads a few
    deployments, not a page of them; once the pool is full, it reads no runs at all."""
    store.apply_resources([pool(concurrencyLimit=3)] + [deployment(f"d{i:03}") for i in range(100)], [])
    for i in range(100):
        due(store, f"d{i:03}", 100 - i)
    executed: list[tuple[str, list[object]]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: executed.append(
        (a[2], list(a[3].values()) if isinstance(a[3], dict) else list(a[3] or ()))))
    assert names(claim(store)) == ["d000", "d001", "d002"]
    looked_up = [name for _, params in executed if "Deployment" in params for name in params if name != "Deployment"]
    assert 3 <= len(looked_up) <= 8
    executed.clear()
    assert claim(store) == []
    assert [sql for sql, _ in executed if "FROM runs" in sql and "ORDER BY" in sql] == []


def test_blocked_backlog_costs_one_page(store: Store) -> None:
    """1,000 due runs of a deployment at its limit ahead of one free run: the
    claim skips the backlog instead of paging through it."""
    store.apply_resources([pool(), deployment("busy", concurrency={"limit": 1}), deployment("free")], [])
    store.insert_scheduled_runs([scheduled("busy", NOW - timedelta(seconds=s)) for s in range(1, 1001)])
    assert names(claim(store, max_count=1)) == ["busy"]
    free = due(store, "free", 0)
    statements = count_selects(store)
    assert [r.id for r in claim(store, max_count=1)] == [free.id]
    assert len(statements) <= 4


def query_plan(tmp_path: object, query: str) -> str:
    """SQLite's plan for ``query`` on a freshly migrated store."""
    with open_store(f"sqlite:///{tmp_path}/o.db") as opened, opened.engine.connect() as conn:
        return str(conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").fetchall())


def test_claim_uses_the_dispatch_index(tmp_path: object) -> None:
    plan = query_plan(tmp_path, "SELECT * FROM runs WHERE state = 'Scheduled' AND pool = 'local' "
                      "AND scheduled_time <= '2030-01-01' AND queue IN ('default') ORDER BY scheduled_time, created_at, id")
    assert "ix_runs_dispatch" in plan and "TEMP B-TREE" not in plan  # read in order: no sort


def test_a_workers_runs_in_a_state_are_found_without_reading_its_history(tmp_path: object) -> None:
    plan = query_plan(tmp_path, "SELECT * FROM runs WHERE state IN ('Cancelling') AND worker = 'w' "
                      "ORDER BY scheduled_time, created_at, id")
    assert "ix_runs_worker_state (worker=? AND state=?)" in plan


BULK_SQL = {
    # 100,000 runs straight in SQL (the API would spend its time binding
    # parameters): 90% in the future, 10% long finished.
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
        INSERT INTO runs (id, deployment, pool, queue, trigger, state, state_reason, attempt,
            max_attempts, retry_delay_seconds, parameters, job_variables, scheduled_time, created_at)
        SELECT printf('%032x', i), 'etl', 'local', 'default', 'schedule',
            CASE WHEN i % 10 = 0 THEN 'Completed' ELSE 'Scheduled' END, '', 1, 1, 0, '{}', '{}',
            strftime('%Y-%m-%d %H:%M:%S', '2030-01-01 13:00:00',
                     CASE WHEN i % 10 = 0 THEN '-' ELSE '+' END || i || ' seconds') || '.000000',
            '2030-01-01 12:00:00.000000'
        FROM n""",
    "postgresql": """
        INSERT INTO runs (id, deployment, pool, queue, trigger, state, state_reason, attempt,
            max_attempts, retry_delay_seconds, parameters, job_variables, scheduled_time, created_at)
        SELECT lpad(to_hex(i), 32, '0'), 'etl', 'local', 'default', 'schedule',
            CASE WHEN mod(i, 10) = 0 THEN 'Completed' ELSE 'Scheduled' END, '', 1, 1, 0, '{}', '{}',
            timestamptz '2030-01-01 13:00:00+00'
                + (CASE WHEN mod(i, 10) = 0 THEN -i ELSE i END) * interval '1 second',
            timestamptz '2030-01-01 12:00:00+00'
        FROM generate_series(1, 100000) AS i""",
}


def test_claim_stays_fast_with_100k_runs(store: Store) -> None:
    store.apply_resources([pool(concurrencyLimit=10), deployment("etl")], [])
    with store.engine.begin() as conn:
        conn.exec_driver_sql(BULK_SQL[store.dialect])
        conn.exec_driver_sql("ANALYZE")
    assert len(store.list_runs(limit=100)) == 100
    due_now = [due(store, "etl", m) for m in (2, 1)]
    started = time.perf_counter()
    claimed = claim(store)
    explained = store.explain_waiting("local", NOW)
    elapsed = time.perf_counter() - started
    assert [r.id for r in claimed] == [r.id for r in due_now]
    assert explained == []
    assert elapsed < 0.5, f"claim + explain took {elapsed:.3f}s with 100,000 runs"


# -- concurrency ------------------------------------------------------------------------

LIMITS = (3, {"critical": 2}, {"a": 1, "c": 2})


def seed_contended(store: Store) -> set[str]:
    store.apply_resources([
        pool(concurrencyLimit=3), queue("critical", priority=1, concurrencyLimit=2),
        deployment("a", concurrency={"limit": 1}), deployment("b"), deployment("c", concurrency={"limit": 2}),
    ], [])
    ids = set()
    for m in range(10):
        for name in ("a", "b", "c"):
            ids.add(due(store, name, m, "critical").id)
            ids.add(due(store, name, m + 0.5).id)
    return ids


def assert_each_claimed_once(store: Store, ids: set[str], claimed: list[str], violations: list[str]) -> None:
    assert violations == []
    assert sorted(claimed) == sorted(ids)  # every run, exactly once
    assert {r.state for r in store.list_runs(limit=1000)} == {"Completed"}
    for run_id in ids:
        assert [e.to_state for e in store.events(run_id)].count("Pending") == 1


def test_concurrent_claims_from_threads(db_url: str) -> None:
    with open_store(db_url) as seeding:
        ids = seed_contended(seeding)
    results: list[tuple[list[str], list[str]]] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        with open_store(db_url) as own:
            barrier.wait(timeout=30)
            results.append(claim_and_finish(own, f"w{n}", NOW, LIMITS, 2000))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert len(results) == 4
    assert sum(1 for claimed, _ in results if claimed) >= 2, "the claimers did not contend"
    with open_store(db_url) as check:
        assert_each_claimed_once(check, ids, [i for c, _ in results for i in c], [v for _, vs in results for v in vs])


def test_concurrent_claims_from_processes(db_url: str) -> None:
    with open_store(db_url) as seeding:
        ids = seed_contended(seeding)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    children = [ctx.Process(target=process_worker, args=(db_url, f"p{n}", barrier, results, LIMITS)) for n in range(3)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert all(claimed is not None for _, claimed, _ in outcomes), outcomes
    with open_store(db_url) as check:
        assert sum(1 for _, ids_of_child, _ in outcomes if ids_of_child) >= 2, "the claimers did not contend"
        claimed = [run_id for _, ids_of_child, _ in outcomes for run_id in ids_of_child]
        assert_each_claimed_once(check, ids, claimed, [v for *_, vs in outcomes for v in vs])
