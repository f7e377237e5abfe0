"""Time zones: lookup with helpful errors, and wall-clock times -> real instants.

Used by ``schedule`` (to validate a schedule's ``timezone`` and anchor) and
by ``slots`` (to turn the local wall-clock times a cron expression names into
the instants they denote). Pure: zone data comes from ``zoneinfo``; nothing
here reads the clock.

A wall-clock time in a zone denotes zero, one or two instants: none inside a
spring-forward gap, two inside a fall-back overlap, one otherwise. The
helpers here make those three cases explicit so that the DST rules of
``docs/schedules.md`` are written once.
"""

from __future__ import annotations

import difflib
import functools
import zoneinfo
from datetime import UTC, datetime, timedelta

__all__ = [
    "load_zone",
    "zone_error",
    "wall_instants",
    "first_instant_at_or_after",
]

# Keys that exist on some machines but name no fixed set of rules: accepting
# them would make a spec mean different things on different servers.
_MACHINE_DEPENDENT = frozenset({"localtime", "posixrules"})
_SECOND = timedelta(seconds=1)


@functools.lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _MACHINE_DEPENDENT


def zone_error(name: object) -> str | None:
    """Return why ``name`` is not a usable IANA zone, or None if it is."""
    if not isinstance(name, str):
        return f"time zone must be a string such as 'Europe/Berlin', got {type(name).__name__}"
    if name in _MACHINE_DEPENDENT:
        return f"time zone {name!r} depends on the machine; name an IANA zone such as 'Europe/Berlin'"
    if name in _known_zones():
        return None
    return f"unknown time zone {name!r}{_did_you_mean(name)}"


def _did_you_mean(name: str) -> str:
    by_lower = {zone.lower(): zone for zone in _known_zones()}
    exact = by_lower.get(name.lower())
    close = [exact] if exact else difflib.get_close_matches(name, sorted(_known_zones()), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else " (use an IANA name such as 'Europe/Berlin')"


@functools.lru_cache(maxsize=256)
def load_zone(name: str) -> zoneinfo.ZoneInfo:
    """The ``ZoneInfo`` for a validated name; ``ValueError`` for anything else."""
    problem = zone_error(name)
    if problem:
        raise ValueError(problem)
    return zoneinfo.ZoneInfo(name)


def wall_instants(wall: datetime, zone: zoneinfo.ZoneInfo) -> tuple[datetime, ...]:
    """Every instant at which clocks in ``zone`` show the naive time ``wall``.

    Returns aware datetimes in ``zone``, earliest first: two in a fall-back
    overlap, none in a spring-forward gap, one otherwise.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return (first,)
    if _is_real(first):
        return (first, second)  # an overlap: the earlier offset is fold=0
    return ()


def _is_real(local: datetime) -> bool:
    """False for a wall time that the zone skips (it does not round-trip)."""
    assert local.tzinfo is not None
    roundtrip = local.astimezone(UTC).astimezone(local.tzinfo)
    return roundtrip.replace(tzinfo=None) == local.replace(tzinfo=None)


def first_instant_at_or_after(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first real instant whose wall time in ``zone`` is ``wall`` or later.

    This is the DST rule for a single named time: a time that occurs twice
    means its first occurrence; a time inside a gap means the first instant
    after the gap (02:30 on a Berlin spring-forward day means 03:00 CEST).
    """
    instants = wall_instants(wall, zone)
    if instants:
        return instants[0]
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant a spring-forward gap containing ``wall`` ends.

    In a gap, zoneinfo reads ``wall`` with the offset before the transition
    for fold=0 and after it for fold=1, so the transition instant lies
    between the two readings. Transitions fall on whole seconds, so a binary
    search over seconds finds it exactly (about 13 steps for a 1-hour gap).
    """
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # earlier than the transition
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)  # at or after it
    target = after.astimezone(zone).utcoffset()
    low, high = 0, int((after - before) / _SECOND)
    while low < high:
        middle = (low + high) // 2
        if (before + middle * _SECOND).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle + 1
    return (before + low * _SECOND).astimezone(zone)
