"""Property tests of slot generation against brute-force oracles, across DST-heavy zones.

The oracles walk real time minute by minute and know nothing of cronsim or
of the wrapper's algorithms:

* wildcard/step hours: every UTC minute whose local wall time matches;
* fixed hours: a wall time fires at the first instant the local clock
  reaches it (or jumps past it), and never again; that is the DST rule of
  DESIGN.md stated operationally.

Times are drawn around each zone's real transitions of 2024-2025, where
the rules matter. Settings are bounded so the file runs in a few seconds.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.scheduling import identity_conflicts, next_slots, parse_schedule, slot_key, slots_between
from orchestra.scheduling.cron import compile_cron

ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",  # negative DST in tzdata
    "America/New_York",
    "America/Santiago",  # transitions at midnight
    "America/Havana",  # transitions at midnight, 01:00 -> 00:00
    "Australia/Lord_Howe",  # 30-minute shift
    "Australia/Sydney",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",  # no DST, half-hour offset
    "Asia/Kathmandu",  # no DST, +05:45
)
MINUTE = timedelta(minutes=1)
WINDOW = timedelta(hours=26)
BOUNDED = settings(max_examples=100, deadline=None)
# A year of slots per example: fewer examples keep the file within a few seconds.
YEARLONG = settings(max_examples=40, deadline=None)
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


# --- a cron matcher of its own, for the oracles ---------------------------------


def _values(field: str, index: int) -> set[int]:
    low, high = _RANGES[index]
    out: set[int] = set()
    for term in field.split(","):
        base, _, step = term.partition("/")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(part) for part in base.split("-"))
        else:
            first = int(base)
            last = high if step else first
        out.update(range(first, last + 1, int(step) if step else 1))
    if index == 4 and 7 in out:
        out.add(0)
    return out


def matcher(expr: str) -> Callable[[datetime], bool]:
    fields = expr.split()
    minutes, hours, days, months, weekdays = (_values(field, i) for i, field in enumerate(fields))
    both_days = fields[2].startswith("*") or fields[4].startswith("*")

    def match(wall: datetime) -> bool:
        if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
            return False
        day_ok, weekday_ok = wall.day in days, wall.isoweekday() % 7 in weekdays
        return (day_ok and weekday_ok) if both_days else (day_ok or weekday_ok)

    return match


def _walls(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """(UTC minute, local naive wall time) for every whole minute in [start, end]."""
    instant = start.replace(second=0, microsecond=0)
    out = []
    while instant <= end:
        out.append((instant, instant.astimezone(zone).replace(tzinfo=None)))
        instant += MINUTE
    return out


def oracle_real_time(expr: str, zone: ZoneInfo, after: datetime, end: datetime) -> list[datetime]:
    match = matcher(expr)
    return [instant for instant, wall in _walls(zone, after + MINUTE, end) if instant > after and match(wall)]


def oracle_fixed_time(expr: str, zone: ZoneInfo, after: datetime, end: datetime) -> list[datetime]:
    match = matcher(expr)
    out: list[datetime] = []
    walls = _walls(zone, after - timedelta(hours=6), end)
    highest = walls[0][1]
    for instant, wall in walls[1:]:
        skipped_over = (highest + k * MINUTE for k in range(1, _minutes(wall - highest) + 1))
        reached = wall > highest and any(match(candidate) for candidate in skipped_over)
        if reached and instant > after:
            out.append(instant)
        highest = max(highest, wall)
    return out


def _minutes(delta: timedelta) -> int:
    return int(delta / MINUTE)


# --- strategies -------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """UTC instants in 2024-2025 at which the zone's offset changes (to the minute)."""
    zone, out = ZoneInfo(zone_name), []
    day = datetime(2024, 1, 1, tzinfo=UTC)
    while day.year < 2026:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            out.append(_bisect(zone, day, following))
        day = following
    return tuple(out)


def _bisect(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    before = low.astimezone(zone).utcoffset()
    while high - low > MINUTE:
        middle = low + (high - low) / 2
        middle = middle.replace(second=0, microsecond=0)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


@st.composite
def instant_near_transition(draw: st.DrawFn, zone_name: str) -> datetime:
    """An aware instant within a day and a half of a transition (or anywhere, for fixed zones)."""
    moments = transitions(zone_name) or (datetime(2024, 6, 1, tzinfo=UTC),)
    center = draw(st.sampled_from(moments))
    offset = draw(st.integers(-36 * 3600, 12 * 3600))
    return center + timedelta(seconds=offset, microseconds=draw(st.sampled_from([0, 0, 1, 500_000])))


def _minute_field() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 59).map(str),
        st.sampled_from(["*", "*/5", "*/15", "*/20", "*/7", "0,30", "15,45", "10-20", "0-59/10", "5/30"]),
    )


def _fixed_hour_field() -> st.SearchStrategy[str]:
    hour_lists = st.lists(st.integers(0, 23), min_size=1, max_size=4, unique=True)
    ranges = st.tuples(st.integers(0, 23), st.integers(0, 23)).map(lambda ab: f"{min(ab)}-{max(ab)}")
    lists = hour_lists.map(lambda hours: ",".join(map(str, sorted(hours))))
    return st.one_of(st.integers(0, 23).map(str), lists, ranges)


def _floating_hour_field() -> st.SearchStrategy[str]:
    return st.sampled_from(["*", "*/2", "*/3", "*/5", "0-23/2", "1-23/4", "*/1"])


def _weekday_field() -> st.SearchStrategy[str]:
    return st.sampled_from(["*", "*", "*", "1-5", "0", "6,0", "7"])


@st.composite
def cron_case(draw: st.DrawFn, fixed: bool) -> tuple[str, str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    hour = draw(_fixed_hour_field() if fixed else _floating_hour_field())
    expr = f"{draw(_minute_field())} {hour} * * {draw(_weekday_field())}"
    return expr, zone, draw(instant_near_transition(zone))


# --- properties -----------------------------------------------------------------------


def _check_against_oracle(expr: str, zone_name: str, after: datetime) -> list[datetime]:
    schedule = parse_schedule({"cron": expr, "timezone": zone_name})
    zone, end = ZoneInfo(zone_name), after + WINDOW
    pattern = compile_cron(expr)
    oracle = oracle_fixed_time if pattern.fixed_hours else oracle_real_time
    slots = slots_between(schedule, after, end)
    assert all(slot.tzinfo == zone for slot in slots), "slots are in the schedule's zone"
    got = [slot.astimezone(UTC) for slot in slots]
    assert got == oracle(expr, zone, after, end)
    assert all(a < b for a, b in zip(got, got[1:], strict=False)), "strictly increasing, no duplicates"
    return got


@BOUNDED
@given(cron_case(fixed=True))
def test_fixed_hour_cron_matches_oracle(case: tuple[str, str, datetime]) -> None:
    expr, zone_name, after = case
    assert compile_cron(expr).fixed_hours
    zone, match = ZoneInfo(zone_name), matcher(expr)
    for slot in _check_against_oracle(expr, zone_name, after):
        wall = slot.astimezone(zone).replace(tzinfo=None)
        just_before = (slot - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        # Either the slot's own wall time matches, or the clock just jumped over a matching time.
        assert match(wall) or (wall - just_before > timedelta(seconds=1))


@BOUNDED
@given(cron_case(fixed=False))
def test_wildcard_hour_cron_matches_oracle(case: tuple[str, str, datetime]) -> None:
    expr, zone_name, after = case
    assert not compile_cron(expr).fixed_hours
    zone, match = ZoneInfo(zone_name), matcher(expr)
    for slot in _check_against_oracle(expr, zone_name, after):
        assert match(slot.astimezone(zone).replace(tzinfo=None)), "every slot is a matching real instant"


@YEARLONG
@given(
    st.sampled_from(ZONES),
    st.integers(0, 59),
    st.integers(0, 23),
    st.sampled_from(["*", "1-5", "0,6"]),
)
def test_fixed_time_daily_job_fires_once_per_matching_day_for_a_year(
    zone_name: str, minute: int, hour: int, weekdays: str
) -> None:
    expr = f"{minute} {hour} * * {weekdays}"
    schedule = parse_schedule({"cron": expr, "timezone": zone_name})
    zone = ZoneInfo(zone_name)
    first_day, last_day = date(2024, 7, 1), date(2025, 7, 1)  # both transitions and a year boundary
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=zone)
    end = datetime.combine(last_day, datetime.min.time(), tzinfo=zone) - timedelta(seconds=1)
    per_day = Counter(slot.date() for slot in slots_between(schedule, start - timedelta(seconds=1), end))
    allowed = {"*": set(range(7)), "1-5": {1, 2, 3, 4, 5}, "0,6": {0, 6}}[weekdays]
    expected = {
        first_day + timedelta(days=n)
        for n in range((last_day - first_day).days)
        if (first_day + timedelta(days=n)).isoweekday() % 7 in allowed
    }
    assert set(per_day) == expected
    assert set(per_day.values()) == {1}


@BOUNDED
@given(
    st.sampled_from(ZONES),
    st.integers(1, 7 * 86_400),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.integers(1, 30),
)
def test_interval_slots_are_exactly_one_interval_apart(
    zone_name: str, seconds: int, anchor: datetime, after: datetime, count: int
) -> None:
    anchor = anchor.replace(microsecond=0)
    schedule = parse_schedule({"interval": seconds, "anchor": anchor.isoformat(), "timezone": zone_name})
    slots = [slot.astimezone(UTC) for slot in next_slots(schedule, after, count)]
    interval = timedelta(seconds=seconds)
    assert after < slots[0] <= after + interval
    assert all(b - a == interval for a, b in zip(slots, slots[1:], strict=False))
    assert all((slot - anchor) % interval == timedelta(0) for slot in slots)


@BOUNDED
@given(cron_case(fixed=False), st.integers(1, 20), st.integers(0, 20))
def test_next_slots_resumes_where_it_left_off(case: tuple[str, str, datetime], first: int, more: int) -> None:
    expr, zone_name, after = case
    schedule = parse_schedule({"cron": expr, "timezone": zone_name})
    head = next_slots(schedule, after, first)
    if len(head) < first:
        return
    tail = next_slots(schedule, head[-1], more)
    assert head + tail == next_slots(schedule, after, first + more)


@BOUNDED
@given(
    cron_case(fixed=True),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=3),
    st.booleans(),
)
def test_keys_depend_on_timing_only(
    case: tuple[str, str, datetime], parameters: dict[str, int], active: bool
) -> None:
    expr, zone_name, after = case
    plain = parse_schedule({"cron": expr, "timezone": zone_name})
    varied = parse_schedule(
        {"cron": f"  {expr} ", "timezone": zone_name, "parameters": parameters, "active": active}
    )
    slots = next_slots(plain, after, 3)
    assert slots == next_slots(varied, after, 3)
    assert [slot_key("d", plain, s) for s in slots] == [slot_key("d", varied, s) for s in slots]
    assert len({slot_key("d", plain, s) for s in slots}) == len(slots)
    assert len(identity_conflicts([plain, varied])) == 1
