"""``Store.leadership``: one process at a time leads (the scheduler's lock), and the lead
passes on when its holder lets go or dies, on SQLite and on PostgreSQL.

Real stores, and a real holder process killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_fixtures import _postgres_schema, db_url_fixture, postgres_base_url  # noqa: F401

from orchestra.store import open_store

REPO = Path(__file__).resolve().parent.parent
HOLDER = """
import sys, time
from orchestra.store import open_store
lead = open_store(sys.argv[1]).leadership("scheduler")
print("held" if lead.held() else "not held", flush=True)
time.sleep(60)
"""


def wait_until_held(lead: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        if lead.held():  # type: ignore[attr-defined]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


def test_one_leads_at_a_time_and_the_lead_passes_on_release(db_url: str) -> None:
    with open_store(db_url) as first, open_store(db_url) as second:
        a, b = first.leadership("scheduler"), second.leadership("scheduler")
        assert a.held() and a.held()  # asking again keeps it
        assert not b.held()
        assert second.leadership("another job").held()  # another name is another lead
        a.release()
        assert b.held() and not a.held()
        b.release()


@pytest.mark.timeout(60)
def test_a_killed_holder_hands_the_lead_over(db_url: str) -> None:
    with open_store(db_url) as store:  # migrated before the holder opens it
        lead = store.leadership("scheduler")
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, db_url], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert not lead.held()
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            assert wait_until_held(lead), "the lead never passed on after its holder died"
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
            if holder.stdout is not None:
                holder.stdout.close()
        lead.release()


def test_a_lost_postgresql_session_is_a_lost_lead_and_another_store_in_another_schema_leads_too() -> None:
    """The server ended the holder's session (a restart, an administrator): the lock went with
    it, another daemon takes it, and the first finds out at its next ask. A store in another
    schema of the same database is another system, with its own lead."""
    base = postgres_base_url()
    assert base is not None
    schemas = [_postgres_schema(base), _postgres_schema(base)]
    url, elsewhere = (next(schema) for schema in schemas)
    try:
        with open_store(url) as first, open_store(url) as second, open_store(elsewhere) as other:
            a, b = first.leadership("scheduler"), second.leadership("scheduler")
            assert a.held() and not b.held()
            assert other.leadership("scheduler").held()
            admin = sa.create_engine(sa.make_url(url).set(query={}), isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    killed = conn.execute(sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND granted AND objid = :low"), {"low": a._key & 0xFFFFFFFF}).scalars().all()  # type: ignore[attr-defined]
            finally:
                admin.dispose()
            assert killed == [True]
            assert wait_until_held(b)
            assert not a.held()
            b.release()
    finally:
        for schema in schemas:
            next(schema, None)


def test_a_store_in_memory_is_its_process_own() -> None:
    with open_store("sqlite:///:memory:") as store:
        assert store.leadership("scheduler").held()


def test_an_sqlite_store_whose_lock_file_cannot_be_made_still_leads(tmp_path: Path) -> None:
    """A lock file in the way (here a directory of that name): the daemon leads, as every
    daemon did before there was a lock; the idempotency key keeps each slot single."""
    url = f"sqlite:///{tmp_path / 'orchestra.db'}"
    with open_store(url) as store:
        (tmp_path / "orchestra.db.scheduler.lock").mkdir()
        assert store.leadership("scheduler").held()
