"""Direct statements (``orchestra.store.direct``): a worker's per-pass statements run
on SQLite's cursor must answer and fail exactly as through ``Connection.execute``.

Real SQLite, and PostgreSQL when ORCHESTRA_TEST_POSTGRES_URL is set (where the
direct path falls back to ``Connection.execute``: the same assertions hold).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_fixtures import T0, clock_fixture, db_url_fixture, new_run, store_fixture  # noqa: F401

from orchestra.errors import Conflict
from orchestra.store import Store, open_store
from orchestra.store.direct import DirectStatement
from orchestra.store.tables import run_events, runs

BY_DEPLOYMENT = sa.select(runs).where(runs.c.deployment == sa.bindparam("d")).order_by(runs.c.id)
SET_REASON = DirectStatement(
    runs.update().where(runs.c.id == sa.bindparam("b_id"), runs.c.state == "Scheduled")
    .values(state_reason=sa.bindparam("v_reason"), lease_expires_at=sa.bindparam("v_lease")))


def make_runs(store: Store, count: int = 3) -> list[str]:
    return [store.create_run(new_run("etl", T0 + timedelta(minutes=i), parameters={"n": i, "s": "a b"})).id
            for i in range(count)]


def test_rows_equal_the_core_path(store: Store) -> None:
    """Times come back aware UTC datetimes and JSON as values, in the statement's column order."""
    make_runs(store)
    direct = DirectStatement(BY_DEPLOYMENT)
    with store.engine.begin() as conn:
        expected = [tuple(row) for row in conn.execute(BY_DEPLOYMENT, {"d": "etl"})]
        got = [tuple(row) for row in direct.rows(conn, {"d": "etl"})]
    assert got == expected and len(got) == 3
    rows = [dict(zip(runs.c.keys(), row, strict=True)) for row in got]
    assert all(row["scheduled_time"].tzinfo is not None for row in rows)
    assert sorted(row["parameters"]["n"] for row in rows) == [0, 1, 2]


def test_scalar_of_an_aggregate_converts_its_type(store: Store) -> None:
    make_runs(store)
    earliest = DirectStatement(sa.select(sa.func.min(runs.c.scheduled_time)))
    with store.engine.begin() as conn:
        assert earliest.scalar(conn) == T0
        assert DirectStatement(sa.select(runs.c.id).where(runs.c.id == "none")).scalar(conn) is None


def test_executemany_counts_and_writes_every_row(store: Store) -> None:
    ids = make_runs(store)
    lease = T0 + timedelta(hours=1)
    params = [{"b_id": run_id, "v_reason": f"reason {i}", "v_lease": lease} for i, run_id in enumerate(ids)]
    with store.engine.begin() as conn:
        assert SET_REASON.executemany(conn, params + [{"b_id": "missing", "v_reason": "x", "v_lease": None}]) == 3
        assert SET_REASON.executemany(conn, []) == 0
    stored = store.get_runs(ids)
    assert [stored[run_id].state_reason for run_id in ids] == ["reason 0", "reason 1", "reason 2"]
    assert {stored[run_id].lease_expires_at for run_id in ids} == {lease}


def test_a_connection_without_begin_begins_as_core_would(store: Store) -> None:
    """Like ``Connection.execute`` (autobegin), a direct write on a connection that has not
    begun joins a transaction, which a rollback takes back."""
    run_id = make_runs(store, 1)[0]
    with store.engine.connect() as conn:
        assert SET_REASON.executemany(conn, [{"b_id": run_id, "v_reason": "not kept", "v_lease": None}]) == 1
        assert conn.in_transaction()
        conn.rollback()
    assert store.get_run(run_id).state_reason != "not kept"


def test_literals_of_the_statement_are_its_own(store: Store) -> None:
    """``state == 'Scheduled'`` in the statement is bound from the statement, not the caller."""
    run_id = make_runs(store, 1)[0]
    store.transition(run_id, "Cancelled", "test")
    with store.engine.begin() as conn:
        assert SET_REASON.executemany(conn, [{"b_id": run_id, "v_reason": "late", "v_lease": None}]) == 0
    assert store.get_run(run_id).state_reason != "late"


def test_insert_with_column_keys(store: Store) -> None:
    run_id = make_runs(store, 1)[0]
    insert = DirectStatement(run_events.insert(), column_keys=("run_id", "time", "from_state", "to_state",
                                                                "reason", "attempt"))
    row = {"run_id": run_id, "time": T0, "from_state": "Scheduled", "to_state": "Pending", "reason": "r",
           "attempt": 1}
    with store.engine.begin() as conn:
        insert.executemany(conn, [row, {**row, "reason": "r2"}])
    events = [e for e in store.events(run_id) if e.to_state == "Pending"]
    assert [(e.reason, e.time, e.from_state) for e in events] == [("r", T0, "Scheduled"), ("r2", T0, "Scheduled")]


def test_errors_are_the_stores_own(store: Store) -> None:
    """A constraint broken through the direct path is a ``Conflict``, as through Core; a
    naive time is refused by the same type code, and nothing is written either way."""
    run_id = make_runs(store, 1)[0]
    insert = DirectStatement(run_events.insert(), column_keys=("run_id", "time", "to_state", "reason", "attempt"))
    bad = {"run_id": "no-such-run", "time": T0, "to_state": "Pending", "reason": "r", "attempt": 1}
    before = len(store.events(run_id))
    with pytest.raises(Conflict), store._db.write() as conn:
        insert.executemany(conn, [{**bad, "run_id": run_id}, bad])
    with pytest.raises(ValueError, match="timezone-aware"), store._db.write() as conn:
        insert.executemany(conn, [{**bad, "run_id": run_id, "time": datetime(2030, 1, 1)}])
    assert len(store.events(run_id)) == before


IN_LIST = (sa.select(runs.c.id).where(runs.c.id.in_(sa.bindparam("ids", expanding=True)),
                                     runs.c.deployment.not_in(sa.bindparam("not", expanding=True)))
           .order_by(runs.c.id))


@pytest.mark.parametrize("ids, excluded", [(1, 1), (3, 2), (2, 0), (0, 1)])
def test_in_lists_of_any_length_equal_the_core_path(store: Store, ids: int, excluded: int) -> None:
    """Each list gets as many placeholders as it has values (an empty one goes through
    Core, which writes the always-false or always-true test SQL needs)."""
    made = make_runs(store, 3)
    store.create_run(new_run("other", T0))
    direct = DirectStatement(IN_LIST)
    params = {"ids": made[:ids] + ["missing"] * (ids > 0), "not": ["other", "nothing"][:excluded]}
    with store.engine.begin() as conn:
        expected = [tuple(row) for row in conn.execute(IN_LIST, params)]
        assert [tuple(row) for row in direct.rows(conn, params)] == expected
        assert [tuple(row) for row in direct.rows(conn, params)] == expected  # the SQL kept for these lengths
    assert len(expected) == ids


def test_an_in_list_of_the_statements_own_equals_the_core_path(store: Store) -> None:
    made = make_runs(store, 2)
    store.transition(made[0], "Cancelled", "test")
    literal = sa.select(runs.c.id).where(runs.c.state.in_(["Scheduled", "Pending"])).order_by(runs.c.id)
    with store.engine.begin() as conn:
        assert [tuple(row) for row in DirectStatement(literal).rows(conn)] == [(made[1],)]


def test_listeners_see_direct_statements(store: Store) -> None:
    """Tests (and operators' instrumentation) count statements with ``before_cursor_execute``."""
    seen: list[tuple[str, Any]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
    with store.engine.begin() as conn:
        DirectStatement(BY_DEPLOYMENT).rows(conn, {"d": "etl"})
    assert any("FROM runs" in statement and "etl" in str(params) for statement, params in seen)


# Only SQLite compiles direct statements; elsewhere Core reports these mistakes its own way.


def test_a_missing_parameter_is_named(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'o.db'}") as store, store.engine.begin() as conn:
        with pytest.raises(KeyError, match="'d'"):
            DirectStatement(BY_DEPLOYMENT).rows(conn, {})
