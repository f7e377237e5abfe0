"""Slot generation: the instants a schedule owes runs at, with the DST rules.

Called by the reconciler (``slots_between`` to account for every slot since
it last looked, including downtime), by ``plan`` and ``orchestra schedule``
(``next_slots``). Pure: the current time is always an argument.

Three generators, one per rule of DESIGN.md "Schedules":

* fixed-hour cron (hour field without ``*`` or ``/``): each matching local
  wall-clock time fires once, at its first occurrence; a time inside a
  spring-forward gap fires at the first instant after the gap;
* wildcard/step-hour cron: every real instant whose local time matches
  fires, so both passes of a repeated hour fire and a skipped hour does not;
* interval: ``anchor + k * interval`` in absolute time.

All comparisons are made in UTC. Python compares two datetimes that share a
``tzinfo`` by wall time and ignores ``fold``, so 02:45 CEST would sort after
02:40 CET although it happens an hour earlier; callers comparing returned
slots should convert them to UTC first too.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from orchestra.scheduling.cron import CronPattern, compile_cron
from orchestra.scheduling.schedule import EPOCH, Schedule
from orchestra.scheduling.zones import first_instant_at_or_after, load_zone, wall_instants

__all__ = ["iter_slots", "next_slots", "slots_between"]

DEFAULT_LIMIT = 10_000
# Wall clocks can run backwards by at most the spread of a zone's offsets
# (a fall-back, or a zone moving across the date line). Offsets lie within
# -15h..+15h (local mean times included), so every instant later than this
# window has a later wall time than the start of the window.
_LOOKAHEAD = timedelta(hours=48)
_SAMPLE_STEP = timedelta(hours=1)
_SECOND = timedelta(seconds=1)


def iter_slots(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Lazily yield the slots strictly after ``after``, ascending, in the schedule's zone.

    ``after`` must be aware (any zone). Validation happens now, not on the
    first ``next()``, so a bad schedule fails where it is passed in.
    """
    after_utc = _aware(after, "after").astimezone(UTC)
    zone = load_zone(schedule.timezone)
    if schedule.kind == "interval":
        assert schedule.interval is not None
        return _interval_slots(schedule.anchor or EPOCH, schedule.interval, after_utc, zone)
    assert schedule.cron is not None
    pattern = compile_cron(schedule.cron)
    if pattern.fixed_hours:
        return _fixed_time_slots(pattern, after_utc, zone)
    return _real_time_slots(pattern, after_utc, zone)


def next_slots(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots strictly after ``after`` (fewer if the schedule ends)."""
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    return list(islice(iter_slots(schedule, after), count))


def slots_between(
    schedule: Schedule, start: datetime, end: datetime, *, limit: int = DEFAULT_LIMIT
) -> list[datetime]:
    """Slots with ``start < slot <= end``: what a schedule owes for a past window.

    At most ``limit`` slots, the earliest ones; a caller that gets exactly
    ``limit`` back continues from the last one (``start=result[-1]``), so a
    long downtime is accounted for in bounded batches.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    _aware(start, "start")
    end_utc = _aware(end, "end").astimezone(UTC)
    result = []
    for slot in iter_slots(schedule, start):
        if slot.astimezone(UTC) > end_utc or len(result) == limit:
            break
        result.append(slot)
    return result


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def _interval_slots(
    anchor: datetime, interval: timedelta, after: datetime, zone: ZoneInfo
) -> Iterator[datetime]:
    """``anchor + k * interval`` for every k with the result after ``after``.

    ``timedelta // timedelta`` is exact integer microsecond arithmetic, so
    no float rounding can shift or repeat a slot.
    """
    try:
        slot = anchor + ((after - anchor) // interval + 1) * interval
        while True:
            yield slot.astimezone(zone)
            slot += interval
    except OverflowError:  # past year 9999: the schedule simply ends
        return


def _fixed_time_slots(pattern: CronPattern, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """Each matching wall time once: its first occurrence, or the end of its gap.

    Mapping wall times to instants this way never goes backwards in time, so
    wall-clock order is slot order; only neighbours can coincide (every time
    in a gap maps to the gap's end), hence the check against the last slot.
    """
    start_wall = after.astimezone(zone).replace(tzinfo=None)
    last: datetime | None = None
    for wall in pattern.walls_after(start_wall):
        instant = first_instant_at_or_after(wall, zone).astimezone(UTC)
        if instant > after and instant != last:
            last = instant
            yield instant.astimezone(zone)


def _real_time_slots(pattern: CronPattern, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """Every instant after ``after`` whose local wall time matches.

    Walks matching wall times in order; each gives 0, 1 or 2 instants. In
    an overlap the second pass of a wall time happens after later wall
    times' first passes, so instants wait in a heap until no later wall
    time can produce an earlier instant: the first-pass instant of a wall
    time bounds every instant still to come from later wall times.
    """
    pending: list[datetime] = []
    for wall in pattern.walls_after(_lowest_wall_after(after, zone) - _SECOND):
        instants = [instant.astimezone(UTC) for instant in wall_instants(wall, zone)]
        for instant in instants:
            if instant > after:
                heapq.heappush(pending, instant)
        while instants and pending and pending[0] <= instants[0]:
            yield heapq.heappop(pending).astimezone(zone)
    while pending:
        yield heapq.heappop(pending).astimezone(zone)


def _lowest_wall_after(after: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time no later than the wall time of any instant after ``after``.

    Normally the wall time of ``after`` itself; shortly before a fall-back it
    is earlier by the size of the shift, because the repeated wall times'
    second pass is still to come. Offsets are sampled hourly, enough to see
    every offset a zone holds for an hour or more (all of them, in tzdata).
    """
    offsets = []
    for k in range(int(_LOOKAHEAD / _SAMPLE_STEP) + 1):
        try:
            offsets.append((after + k * _SAMPLE_STEP).astimezone(zone).utcoffset())
        except OverflowError:  # within two days of year 9999: nothing later to sample
            break
    lowest = min(offset for offset in offsets if offset is not None)
    return (after + lowest).replace(tzinfo=None)
