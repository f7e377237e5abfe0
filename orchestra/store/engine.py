"""Connections and transactions: the one place that knows the dialects apart.

``Database`` hands out read and write transactions. Every other store module
runs its statements inside one of them and stays dialect-neutral; where the
dialects differ (insert-or-ignore, advisory locks) the difference lives here.

SQLite needs care to let a daemon and CLI commands write the same file at
once. pysqlite's own transaction handling begins transactions lazily and
deferred, so a transaction that reads and then writes must *upgrade* its lock;
in WAL mode an upgrade after another writer committed fails at once with
"database is locked", whatever the busy timeout. So we take transaction
control away from pysqlite (SQLAlchemy's documented recipe:
``isolation_level = None`` plus a ``begin`` event) and start every write
transaction with ``BEGIN IMMEDIATE``: writers queue on the busy timeout up
front instead of failing half way. Reads use a plain deferred ``BEGIN``,
which in WAL mode never blocks and is never blocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, StatementError

from orchestra.errors import Conflict, StoreError
from orchestra.store.checkpoints import BackgroundCheckpoints, without_automatic_checkpoints
from orchestra.store.direct import execute_on_cursor

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_MMAP_BYTES = 256 * 1024 * 1024  # of the database file mapped at most
_BEGIN_OPTION = "orchestra_begin"
_WAL_RETRY_SECONDS = 0.01
SUPPORTED_DIALECTS = ("sqlite", "postgresql")


def default_url(cwd: Path | None = None) -> str:
    """The embedded store: ``.orchestra/orchestra.db`` under the working directory."""
    directory = (cwd or Path.cwd()) / ".orchestra"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'orchestra.db'}"


def normalize_url(url: str) -> str:
    """Send bare ``postgresql://`` URLs to psycopg 3, the driver we ship."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from pysqlite; our begin event emits it (see module doc).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching to WAL itself needs the lock briefly.
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    _enter_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    # Pages read through a mapping, not a read() each: about 4 % of a burst's CPU.
    cursor.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
    cursor.close()


def _enter_wal(cursor: Any) -> None:
    """Switch to WAL, waiting out other connections the way the busy timeout would.

    The switch happens once per database file, on a database still in rollback
    mode. There it needs the exclusive lock, and while another connection holds
    the reserved lock (another process creating the schema of the same new
    file) SQLite answers ``SQLITE_BUSY`` at once without calling the busy
    handler, since waiting while holding the shared lock could deadlock. So
    the retries are ours, for as long as the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(_WAL_RETRY_SECONDS)


def _sqlite_on_begin(conn: Connection) -> None:
    """Send the ``BEGIN`` on the driver's cursor, as ``direct`` runs a pass's statements
    (listeners still see it): through ``exec_driver_sql`` it cost about 20 of an empty
    transaction's 87 µs, and a burst's loop makes one transaction per wave."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        execute_on_cursor(conn, cursor, conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"), (), many=False)
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the SQLite pragmas and transaction control installed."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Read and write transactions over one engine, with errors mapped to ours."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        self._checkpoints: BackgroundCheckpoints | None = None
        self._kept: tuple[int, Connection] | None = None  # (thread, its write connection): ``keep_writer``

    def keep_writer(self) -> None:
        """Keep one SQLite connection checked out for the calling thread's writes.

        The daemon's loop writes once per wave of a burst; taking a connection
        from the pool and handing it back cost about 40 of an empty write's 64 µs.
        Other threads (the API's) still take theirs from the pool. PostgreSQL
        keeps the pool: its pre-ping and reconnects are the pool's work.
        """
        path = self.engine.url.database
        if self.dialect == "sqlite" and path and path != ":memory:" and self._kept is None:
            self._kept = (threading.get_ident(), self._writer.connect())

    def _kept_writer(self) -> Connection | None:
        kept = self._kept
        return kept[1] if kept is not None and kept[0] == threading.get_ident() else None

    def checkpoint_in_background(self) -> None:
        """For the process that writes most (the daemon): a SQLite file's WAL is
        checkpointed by a thread, not by the commit that fills it (``checkpoints``)."""
        path = self.engine.url.database
        if self.dialect != "sqlite" or self._checkpoints is not None or not path or path == ":memory:":
            return
        event.listen(self.engine, "connect", without_automatic_checkpoints)
        self.engine.dispose()  # the idle connections made before: closed, and made anew with it
        self._checkpoints = BackgroundCheckpoints(path)
        self._checkpoints.start()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent snapshot for several reads; never takes the write lock."""
        with _mapped_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it holds the write lock from the start."""
        kept = self._kept_writer()
        if kept is not None:
            with _mapped_errors(), kept.begin():
                yield kept
            return
        with _mapped_errors(), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def rehearsal(self) -> Iterator[Connection]:
        """A write transaction that is always rolled back: statements run as they
        would for real (compiled, prepared, their rows read) and leave nothing."""
        kept = self._kept_writer()
        with _mapped_errors(), contextlib.nullcontext(kept) if kept is not None else self._writer.connect() as conn:
            conn.begin()
            try:
                yield conn
            finally:
                conn.rollback()

    def insert_ignore(self, table: Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this dialect."""
        module = sqlite if self.dialect == "sqlite" else postgresql
        return module.insert(table).on_conflict_do_nothing()

    def lock(self, conn: Connection, name: str) -> None:
        """Serialize writers that touch ``name`` until the transaction ends.

        SQLite needs nothing: ``BEGIN IMMEDIATE`` already serializes all
        writers. PostgreSQL takes a transaction-scoped advisory lock.
        """
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(advisory_key(name))))

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        kept, self._kept = self._kept, None
        if kept is not None:
            with contextlib.suppress(Exception):  # closing: a connection that cannot say goodbye is gone anyway
                kept[1].close()
        self.engine.dispose()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (Python's hash() differs per process)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Constraint violations are conflicts; an unreachable or locked store may recover."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"conflicts with stored data: {exc.orig}") from exc
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(f"store unavailable: {exc.orig}") from exc
    except StatementError as exc:
        # A value we could not bind (a naive datetime, unserializable JSON) is
        # the caller's bug: show them their error, not SQLAlchemy's wrapper.
        if isinstance(exc.orig, (ValueError, TypeError)):
            raise exc.orig from None
        raise
