"""Statements a worker runs on every pass, executed straight on SQLite's driver.

A daemon draining a burst of short jobs writes once per wave of job ends,
and each write runs the same handful of statements. Through SQLAlchemy's
``Connection.execute`` a statement costs about 60 µs before SQLite sees it
(execution context, parameter construction and processing per row, result
metadata), against under 10 µs on the DB-API cursor: most of a wave's write.

``DirectStatement`` compiles a Core statement once per dialect and keeps what
execution needs (the SQL, the order of its parameters with each one's bind
processor and default value, the result columns' processors), so the
statement is still written once, as Core, and its values are converted by
the same type code (``UTCDateTime``, JSON) as on the ordinary path. It runs on
the cursor of the connection's own DB-API connection, inside the caller's
transaction (the ``BEGIN`` is SQLAlchemy's, as always).

Only on SQLite: there the driver is in-process and the overhead is most of
the cost. Elsewhere ``rows``, ``scalar`` and ``executemany`` go through
``Connection.execute``, with the same answers. An expanding (``IN`` list)
parameter gets as many placeholders as its list has values, in SQL kept per
list length; an empty list, whose SQL differs, goes through Core. What
callers rely on is kept: ``before_cursor_execute`` listeners see the
statement, a connection that has not begun begins (autobegin), and driver
errors arrive as SQLAlchemy's, which the store maps to its own.
``tests/test_store_direct.py`` holds both paths to the same results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import BindParameter

Processor = Callable[[Any], Any] | None
_REQUIRED = object()
_LIST_MARK = "__[POSTCOMPILE_{}]"  # where SQLAlchemy 2 leaves an IN list's placeholders to be written


class _Compiled:
    """One statement as compiled for one dialect, reduced to what executing it needs."""

    def __init__(self, statement: Any, dialect: Dialect, column_keys: Sequence[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: direct statements need a positional paramstyle")
        binds: dict[str, BindParameter[Any]] = compiled.binds
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup)
        self.lists = tuple(dict.fromkeys(name for name in self.names if binds[name].expanding))
        if any(_LIST_MARK.format(name) not in self.sql for name in self.lists):
            raise TypeError("this SQLAlchemy renders IN lists unlike 2.0: run the statement through Core")
        self._sql_for_lengths: dict[tuple[int, ...], str] = {}
        self.defaults = tuple(_default(binds[name]) for name in self.names)
        self.processors: tuple[Processor, ...] = tuple(
            binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names)
        self._named = list(zip(self.names, self.defaults, strict=True))
        self._to_process = [(index, process) for index, process in enumerate(self.processors) if process is not None]
        columns = statement.selected_columns if statement.is_select else ()
        processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        # Only the columns that need converting are visited per row (a run has 26, 9 of them times or JSON).
        self.results = [(index, process) for index, process in enumerate(processors) if process is not None]

    def row(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters for ``params`` (a statement's own values where not given;
        an IN list's values one by one)."""
        if not self.lists:  # the usual case, a row of an executemany: no per-name branching
            values = [params.get(name, default) for name, default in self._named]
            for index, process in self._to_process:
                if values[index] is not None and values[index] is not _REQUIRED:
                    values[index] = process(values[index])
            if any(value is _REQUIRED for value in values):
                raise KeyError(f"no value for the bound parameter {self._missing(params)!r}")
            return tuple(values)
        values = []
        for name, default, process in zip(self.names, self.defaults, self.processors, strict=True):
            value = params.get(name, default)
            if value is _REQUIRED:
                raise KeyError(f"no value for the bound parameter {name!r}")
            if name in self.lists:
                values += [item if process is None or item is None else process(item) for item in value]
            else:
                values.append(value if process is None or value is None else process(value))
        return tuple(values)

    def _value(self, name: str, params: Mapping[str, Any]) -> Any:
        """The value bound to ``name``: the caller's, else the statement's own (a literal list)."""
        value = params.get(name, self.defaults[self.names.index(name)])
        if value is _REQUIRED:
            raise KeyError(f"no value for the bound parameter {name!r}")
        return value

    def _missing(self, params: Mapping[str, Any]) -> str:
        return next(name for name, default in self._named if default is _REQUIRED and name not in params)

    def sql_for(self, params: Mapping[str, Any]) -> str | None:
        """The SQL for these parameters: each IN list given as many placeholders as it has
        values. None for an empty list, whose SQL (an always-false test) Core writes."""
        if not self.lists:
            return self.sql
        lengths = tuple(len(self._value(name, params)) for name in self.lists)
        if 0 in lengths:
            return None
        sql = self._sql_for_lengths.get(lengths)
        if sql is None:
            sql = self.sql
            for name, length in zip(self.lists, lengths, strict=True):
                sql = sql.replace(_LIST_MARK.format(name), ", ".join("?" * length))
            self._sql_for_lengths[lengths] = sql
        return sql

    def converted(self, rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
        """The rows with each value as Core would return it (times, JSON, booleans converted)."""
        if not self.results:
            return list(rows)
        converted = []
        for row in rows:
            values = list(row)
            for index, process in self.results:
                if values[index] is not None:
                    values[index] = process(values[index])
            converted.append(values)
        return converted


def _default(bind: BindParameter[Any]) -> Any:
    """A literal's own value (``state = 'Scheduled'``), or a marker that the caller must give one."""
    if bind.callable is not None:
        return bind.effective_value
    return _REQUIRED if bind.required else bind.value


class DirectStatement:
    """A Core statement run on SQLite's cursor (see the module doc); built once, at import."""

    def __init__(self, statement: Executable, column_keys: Sequence[str] | None = None) -> None:
        """``column_keys``: for an ``insert()`` without ``values``, the columns every
        parameter set gives (as SQLAlchemy derives them from the first set)."""
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, conn: Connection) -> _Compiled | None:
        dialect = conn.dialect
        if dialect.name != "sqlite":
            return None
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(dialect.name, _Compiled(self.statement, dialect, self.column_keys))
        return compiled

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        """The rows of a query: sequences of converted values in the statement's column order."""
        params = params or {}
        compiled = self._for(conn)
        sql = compiled.sql_for(params) if compiled is not None else None
        if compiled is None or sql is None:
            return [tuple(row) for row in conn.execute(self.statement, dict(params))]
        cursor = _cursor(conn)
        try:
            execute_on_cursor(conn, cursor, sql, compiled.row(params), many=False)
            return compiled.converted(cursor.fetchall())
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(conn, params)
        return rows[0][0] if rows else None

    def executemany(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Run a write once per parameter set; the number of rows it changed in all
        (as ``rowcount``: -1 where the driver does not count, as psycopg for inserts)."""
        if not params:
            return 0
        compiled = self._for(conn)
        if compiled is None or compiled.lists:  # IN lists vary per row: Core renders them
            return conn.execute(self.statement, list(params)).rowcount
        cursor = _cursor(conn)
        try:
            execute_on_cursor(conn, cursor, compiled.sql, [compiled.row(row) for row in params], many=True)
            return int(cursor.rowcount)
        finally:
            cursor.close()


def _cursor(conn: Connection) -> Any:
    """A cursor of the DB-API connection under ``conn``, in the caller's transaction.

    A connection used without ``begin()`` begins one here, as ``Connection.execute``
    would (SQLAlchemy's autobegin): on SQLite the ``BEGIN`` is ours to send (see
    ``engine.py``), and a statement sent before it would commit on its own.
    """
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def execute_on_cursor(conn: Connection, cursor: Any, sql: str, params: Any, *, many: bool) -> None:
    """Execute as ``Connection.execute`` would be seen: ``before_cursor_execute``
    listeners are told (tests count a pass's statements with one), and a driver
    error becomes SQLAlchemy's (``IntegrityError``, ``OperationalError``), which
    ``engine._mapped_errors`` turns into ours."""
    for listener in conn.dispatch.before_cursor_execute:
        sql, params = listener(conn, cursor, sql, params, None, many)
    dbapi = conn.dialect.loaded_dbapi
    try:
        (cursor.executemany if many else cursor.execute)(sql, params)
    except dbapi.Error as error:
        raise DBAPIError.instance(sql, params, error, dbapi.Error, dialect=conn.dialect) from error
