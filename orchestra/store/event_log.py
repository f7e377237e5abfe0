"""Run events in id order, for feeds that must miss none (``api.feed``).

``events_after`` is one range scan of the ``run_events`` primary key, with
the deployment of each event's run joined in, so a feed reads everything new
in one statement however many runs changed.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from orchestra.store.models import RunEvent
from orchestra.store.tables import run_events, runs

_E = run_events.c


def events_after(conn: Connection, event_id: int, limit: int) -> list[tuple[RunEvent, str]]:
    """Events with an id greater than ``event_id``, oldest first, each with its run's deployment."""
    query = (
        select(run_events, runs.c.deployment)
        .join(runs, runs.c.id == _E.run_id)
        .where(_E.id > event_id)
        .order_by(_E.id)
        .limit(limit)
    )
    rows = conn.execute(query)
    return [(RunEvent(**{k: v for k, v in row._mapping.items() if k != "deployment"}), row.deployment)
            for row in rows]
