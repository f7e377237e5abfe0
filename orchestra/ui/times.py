"""Times as the UI shows them: always with their zone.

The server writes UTC (and, for schedules, the schedule's own zone) into a
``<time datetime=...>`` element; ``static/orchestra.js`` adds the viewer's
local time next to it, since only the browser knows the viewer's zone.
Without JavaScript the page still says which zone each time is in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape


def utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def zone_text(value: datetime, zone: str) -> str:
    """``2030-01-02 02:30 CET (Europe/Berlin)``."""
    local = value.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({zone})"


def time_html(value: datetime | str | None, zone: str | None = None) -> Markup:
    """A ``<time>`` in UTC, or in ``zone`` when given (a schedule's zone), that JS can localise."""
    if value is None or value == "":
        return Markup('<span class="muted">—</span>')
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    text = zone_text(moment, zone) if zone and zone != "UTC" else utc_text(moment)
    stamp = moment.astimezone(UTC).isoformat()
    return Markup('<time datetime="{}" data-local>{}</time>').format(escape(stamp), escape(text))


def duration_text(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """``1m 05s`` from start to end (or to now while running); empty if it never started."""
    if start is None:
        return ""
    seconds = int(((end or now) - start) / timedelta(seconds=1))
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
