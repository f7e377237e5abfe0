"""One daemon at a time does a job meant for one: leadership over a store.

DESIGN.md: when several daemons share a store, one at a time materializes
schedules. Each slot's idempotency key already makes a second insert a no-op,
so leadership is not what keeps a slot from running twice; it keeps the
daemons from all doing the scheduler's reads and writes for every slot, and
from racing over which of them records a slot Missed or Skipped.

The lock dies with its holder, at once, with no lease to run out:

- PostgreSQL: a session advisory lock (keyed by the name and the store's
  schema) on a connection kept for it; a
  daemon killed closes its connection and the server drops the lock. A
  holder checks its connection at each ``held()``; a broken one means the
  lock is gone (another daemon may have it), and it is tried for again.
- SQLite: an ``flock`` on a file beside the database; the kernel drops it
  when the holder's process ends. (Daemons sharing an SQLite file share a
  host: SQLite over a network file system is not supported anyway.)
- An in-memory database is one process's own: always held.

A daemon that does not lead asks again at each ``held()``; the scheduler
asks every second, so a leader killed is replaced within about a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, func, select, text

from orchestra.store.engine import advisory_key

__all__ = ["Leadership", "leadership"]

log = logging.getLogger("orchestra.store")


class Leadership:
    """Whether this process leads for ``name``; ``held()`` takes the lead when it is free."""

    def held(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        """Give the lead up (a clean stop), so that another daemon takes it at once."""


class _Always(Leadership):
    def held(self) -> bool:
        return True


class _FileLock(Leadership):
    """``flock`` on ``path``: held until released or this process ends."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._unlockable = False

    def held(self) -> bool:
        if self._file is not None or self._unlockable:
            return True
        try:
            handle = open(self._path, "ab")  # noqa: SIM115 - kept open while the lock is held
        except OSError as err:  # the key keeps slots single anyway: lead, as before there was a lock
            log.warning("cannot make the lock file %s (%s): this daemon materializes the schedules "
                        "whatever other daemons do", self._path, err)
            self._unlockable = True
            return True
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


class _AdvisoryLock(Leadership):
    """A PostgreSQL session advisory lock on a connection of its own."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._key: int | None = None
        self._conn: Any = None

    def held(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
                log.warning("lost the connection holding the scheduler's lead; trying for it again")
                self.release()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception:  # noqa: BLE001 - no store now: nobody leads through it either
            return False
        try:
            # Advisory locks are per database; stores in other schemas of it are other systems.
            schema = conn.execute(select(func.current_schema())).scalar()
            self._key = advisory_key(f"orchestra:{self._name}:{schema}")
            taken = bool(conn.execute(select(func.pg_try_advisory_lock(self._key))).scalar())
        except Exception:  # noqa: BLE001
            taken = False
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.execute(select(func.pg_advisory_unlock(self._key)))
        with contextlib.suppress(Exception):
            conn.invalidate()  # never back to the pool: a pooled session would keep a stale lock
            conn.close()


def leadership(engine: Engine, name: str) -> Leadership:
    """The lead for ``name`` over the store ``engine`` opens."""
    if engine.dialect.name == "postgresql":
        return _AdvisoryLock(engine, name)
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return _Always()
    return _FileLock(Path(f"{os.fspath(database)}.{name}.lock"))
