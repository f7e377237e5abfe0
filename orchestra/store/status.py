"""Status documents: what the daemon knows that others want to see.

The daemon writes, e.g., whether the watched spec tree is valid and its
errors; ``orchestra get``/``status``, the API and the UI read it. One row
per key, overwritten; no history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from orchestra.store.tables import run_events, status


def put_status(conn: Connection, key: str, value: Any, now: datetime) -> None:
    updated = conn.execute(status.update().where(status.c.key == key).values(value=value, updated_at=now))
    if updated.rowcount == 0:
        conn.execute(status.insert().values(key=key, value=value, updated_at=now))


def get_status(conn: Connection, key: str) -> Any | None:
    return conn.scalar(select(status.c.value).where(status.c.key == key))


def list_status(conn: Connection, prefix: str) -> dict[str, Any]:
    """Every document whose key starts with ``prefix`` (one per daemon, say), by key."""
    rows = conn.execute(select(status.c.key, status.c.value)
                        .where(status.c.key.startswith(prefix, autoescape=True)).order_by(status.c.key))
    return {key: value for key, value in rows}


def delete_status(conn: Connection, keys: list[str]) -> None:
    if keys:
        conn.execute(status.delete().where(status.c.key.in_(keys)))


def last_event_id(conn: Connection) -> int:
    return int(conn.scalar(_LAST_EVENT_ID) or 0)


# Read on every pass of the daemon: built once, as building costs more than running it.
_LAST_EVENT_ID = select(func.max(run_events.c.id))
