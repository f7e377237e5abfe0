"""Schedules: parsing errors with paths, identity and keys, and DST slots to the minute.

The DST tables are the contract of DESIGN.md "Schedules" written as exact
instants; the comparison tests at the end document why orchestra wraps
cronsim instead of using croniter or cronsim's own DST handling.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestra.errors import FieldError
from orchestra.scheduling import (
    EPOCH,
    Schedule,
    describe,
    identity_conflicts,
    iter_slots,
    next_slots,
    parse_schedule,
    schedule_errors,
    slot_key,
    slots_between,
    validate_cron,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cron(expr: str, zone: str = "UTC", **extra: object) -> Schedule:
    return parse_schedule({"cron": expr, "timezone": zone, **extra})


def in_utc(slots: list[datetime]) -> list[str]:
    return [slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") for slot in slots]


def local_day(schedule: Schedule, day: date) -> list[datetime]:
    """Slots whose local date is ``day``."""
    zone = ZoneInfo(schedule.timezone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone) - timedelta(seconds=1)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone) - timedelta(seconds=1)
    return slots_between(schedule, start, end)


# --- parsing -----------------------------------------------------------------


def test_parse_full_cron_item() -> None:
    raw = {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "parameters": {"full": True},
        "active": False,
        "name": "nightly",
    }
    schedule = parse_schedule(raw)
    assert schedule == Schedule(
        kind="cron",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        parameters={"full": True},
        active=False,
        name="nightly",
    )
    raw["parameters"]["full"] = False  # type: ignore[index]
    assert schedule.parameters == {"full": True}, "the schedule must not alias the spec"


def test_parse_interval_defaults() -> None:
    schedule = parse_schedule({"interval": "15m"})
    assert schedule.kind == "interval"
    assert schedule.interval == timedelta(minutes=15)
    assert schedule.anchor == EPOCH
    assert schedule.timezone == "UTC"
    assert schedule.parameters == {} and schedule.active is True and schedule.name is None


@pytest.mark.parametrize(
    ("anchor", "zone", "expected"),
    [
        ("2024-01-01T00:00:00Z", "Europe/Berlin", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01T01:00:00+01:00", "UTC", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01T09:00:00", "Europe/Berlin", "2024-01-01T08:00:00+00:00"),
        ("2024-07-01", "Europe/Berlin", "2024-06-30T22:00:00+00:00"),
        (datetime(2024, 1, 1, tzinfo=UTC), "UTC", "2024-01-01T00:00:00+00:00"),
        (date(2024, 1, 1), "America/New_York", "2024-01-01T05:00:00+00:00"),
        # A wall time inside the spring-forward gap: first instant after it.
        ("2024-03-31T02:30:00", "Europe/Berlin", "2024-03-31T01:00:00+00:00"),
        # A repeated wall time: its first occurrence.
        ("2024-10-27T02:30:00", "Europe/Berlin", "2024-10-27T00:30:00+00:00"),
    ],
)
def test_parse_anchor_forms(anchor: object, zone: str, expected: str) -> None:
    schedule = parse_schedule({"interval": "1h", "anchor": anchor, "timezone": zone})
    assert schedule.anchor is not None
    assert schedule.anchor.isoformat() == expected


@pytest.mark.parametrize(
    ("raw", "path", "message_part"),
    [
        ({}, (), "needs `cron`"),
        ({"cron": "* * * * *", "interval": "1m"}, ("interval",), "not both"),
        ({"cron": "61 * * * *"}, ("cron",), "minute field '61': 61 is out of range 0-59"),
        ({"cron": "0 24 * * *"}, ("cron",), "hour field '24': 24 is out of range 0-23"),
        ({"cron": "0 0 0 * *"}, ("cron",), "day-of-month field '0': 0 is out of range 1-31"),
        ({"cron": "0 0 * 13 *"}, ("cron",), "month field '13': 13 is out of range 1-12"),
        ({"cron": "0 0 * * 8"}, ("cron",), "day-of-week field '8': 8 is out of range 0-7"),
        ({"cron": "0 0 * FOO *"}, ("cron",), "names JAN-DEC are allowed"),
        ({"cron": "0 0 * * funday"}, ("cron",), "day-of-week field 'funday' is not valid"),
        ({"cron": "*/0 * * * *"}, ("cron",), "a step needs a whole number of at least 1"),
        ({"cron": "5-1 * * * *"}, ("cron",), "range 5-1 goes backwards"),
        ({"cron": "0 0 30 2 *"}, ("cron",), "names a day that no selected month has"),
        ({"cron": "0 0 * * * *"}, ("cron",), "has 6 fields; orchestra uses the 5-field form"),
        ({"cron": "0 0 * *"}, ("cron",), "has 4 fields; it needs 5"),
        ({"cron": ""}, ("cron",), "cron expression is empty"),
        ({"cron": "@reboot"}, ("cron",), "@reboot is not supported"),
        ({"cron": "@fortnightly"}, ("cron",), "unknown cron macro '@fortnightly'"),
        ({"cron": 5}, ("cron",), "must be a string"),
        ({"cron": "0 0 * * *", "timezone": "Europe/Berln"}, ("timezone",),
         "unknown time zone 'Europe/Berln'; did you mean 'Europe/Berlin'?"),
        ({"cron": "0 0 * * *", "timezone": "europe/berlin"}, ("timezone",), "did you mean 'Europe/Berlin'?"),
        ({"cron": "0 0 * * *", "timezone": "Mars/Olympus"}, ("timezone",), "unknown time zone"),
        ({"cron": "0 0 * * *", "timezone": "localtime"}, ("timezone",), "depends on the machine"),
        ({"cron": "0 0 * * *", "timezone": 1}, ("timezone",), "must be a string"),
        ({"cron": "0 0 * * *", "anchor": "2024-01-01T00:00:00Z"}, ("anchor",), "only to interval schedules"),
        ({"interval": "0s"}, ("interval",), "greater than zero"),
        ({"interval": "soon"}, ("interval",), "is not a duration"),
        ({"interval": "1.5s"}, ("interval",), "whole number of seconds"),
        ({"interval": "P1M"}, ("interval",), "years or months"),
        ({"interval": "1h", "anchor": "tomorrow"}, ("anchor",), "not an ISO 8601 date-time"),
        ({"interval": "1h", "anchor": 12}, ("anchor",), "must be an ISO 8601 date-time"),
        ({"interval": "1h", "anchor": "2024-01-01T00:00:00.5Z"}, ("anchor",), "whole second"),
        ({"cron": "0 0 * * *", "parameters": [1]}, ("parameters",), "mapping"),
        ({"cron": "0 0 * * *", "active": "yes"}, ("active",), "true or false"),
        ({"cron": "0 0 * * *", "name": "has space"}, ("name",), "letters, digits"),
        ({"cron": "0 0 * * *", "name": "cron:x"}, ("name",), "letters, digits"),
        ({"cron": "0 0 * * *", "tz": "UTC"}, ("tz",), "did you mean 'timezone'?"),
        ({"cron": "0 0 * * *", "parametres": {}}, ("parametres",), "did you mean 'parameters'?"),
    ],
)
def test_parse_errors_name_the_field(
    raw: dict[str, object], path: tuple[str, ...], message_part: str
) -> None:
    with pytest.raises(FieldError) as caught:
        parse_schedule(raw)
    assert caught.value.path == path
    assert message_part in caught.value.message


def test_parse_rejects_non_mapping() -> None:
    with pytest.raises(FieldError, match="must be a mapping"):
        parse_schedule(["cron"])  # type: ignore[arg-type]


def test_schedule_errors_reports_every_problem() -> None:
    errors = schedule_errors({"cron": "61 * * * *", "timezone": "Nowhere/City", "active": 1, "colour": "red"})
    assert sorted(error.path for error in errors) == [("active",), ("colour",), ("cron",), ("timezone",)]
    assert schedule_errors({"cron": "0 0 * * *"}) == []


def test_field_error_prefix_gives_spec_path() -> None:
    with pytest.raises(FieldError) as caught:
        parse_schedule({"cron": "0 0 * * *", "timezone": "Europe/Berln"})
    error = caught.value.prefixed(("spec", "schedules", 0))
    assert str(error).startswith("spec.schedules[0].timezone: unknown time zone")


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("30 2 * * *", None),
        ("*/15 9-17 * * MON-FRI", None),
        ("0 0 L * *", None),
        ("0 22 * * 1#2", None),
        ("0 0 1,15 JAN,jul *", None),
        ("0 0 * * 7", None),
        ("@daily", None),
        ("@ANNUALLY", None),
        ("0 0 29 2 *", None),  # leap years only, but real
        ("0 0 31 4 *", "names a day that no selected month has"),
        ("0 0 ? * *", "day-of-month field '?' is not valid"),
        ("1-", "has 1 fields"),
        ("0 0 1- * *", "day-of-month field '1-' is not valid"),
    ],
)
def test_validate_cron(expr: str, problem: str | None) -> None:
    result = validate_cron(expr)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


# --- macros and identity -----------------------------------------------------


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@Daily", "0 0 * * *"),
    ],
)
def test_macros_expand(macro: str, expanded: str) -> None:
    assert cron(macro).identity == f"cron:{expanded}@UTC"
    after = utc("2024-05-15T12:34:00")
    assert next_slots(cron(macro), after, 5) == next_slots(cron(expanded), after, 5)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("30  2 * *   *", "30 2 * * *"),
        ("030 02 * * *", "30 2 * * *"),
        ("0 0 * jan mon-fri", "0 0 * JAN MON-FRI"),
        ("*/05 * * * *", "*/5 * * * *"),
        ("0 10 * * *", "0 10 * * *"),
    ],
)
def test_identity_normalizes_spelling(written: str, canonical: str) -> None:
    assert cron(written, "Europe/Berlin").identity == f"cron:{canonical}@Europe/Berlin"


def test_identity_ignores_parameters_and_active() -> None:
    base = cron("30 2 * * *", "Europe/Berlin")
    changed = cron("30 2 * * *", "Europe/Berlin", parameters={"full": True}, active=False)
    assert base.identity == changed.identity == "cron:30 2 * * *@Europe/Berlin"
    assert base != changed


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"cron": "30 2 * * *"}, {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}),
        ({"cron": "30 2 * * *"}, {"cron": "31 2 * * *"}),
        ({"interval": "15m"}, {"interval": "30m"}),
        ({"interval": "15m"}, {"interval": "15m", "anchor": "2024-01-01T00:05:00Z"}),
    ],
)
def test_identity_changes_with_timing(one: dict[str, object], other: dict[str, object]) -> None:
    assert parse_schedule(one).identity != parse_schedule(other).identity


def test_named_schedule_identity_is_its_name() -> None:
    before = cron("30 2 * * *", name="nightly")
    after = cron("45 3 * * *", "Europe/Berlin", name="nightly")
    assert before.identity == after.identity == "nightly"


@pytest.mark.parametrize(
    ("raw", "identity"),
    [
        ({"interval": "15m"}, "interval:900s@1970-01-01T00:00:00Z"),
        # The anchor is a phase: moving it by whole intervals changes no slot and no key.
        ({"interval": "15m", "anchor": "2024-01-01T00:00:00Z"}, "interval:900s@1970-01-01T00:00:00Z"),
        ({"interval": "PT15M", "anchor": "2024-01-01T00:05:00Z"}, "interval:900s@1970-01-01T00:05:00Z"),
        ({"interval": "1d", "anchor": "2024-01-01T09:00:00", "timezone": "Europe/Berlin"},
         "interval:86400s@1970-01-01T08:00:00Z"),
        ({"interval": 90, "timezone": "Asia/Tokyo"}, "interval:90s@1970-01-01T00:00:00Z"),
    ],
)
def test_interval_identity(raw: dict[str, object], identity: str) -> None:
    assert parse_schedule(raw).identity == identity


def test_slot_key() -> None:
    schedule = cron("30 2 * * *", "Europe/Berlin")
    slot = next_slots(schedule, utc("2024-03-30T12:00:00"), 1)[0]
    assert slot_key("nightly-report", schedule, slot) == (
        "nightly-report/cron:30 2 * * *@Europe/Berlin/2024-03-31T01:00:00Z"
    )
    named = cron("30 2 * * *", "Europe/Berlin", name="nightly", parameters={"x": 1})
    assert slot_key("nightly-report", named, slot) == "nightly-report/nightly/2024-03-31T01:00:00Z"


def test_slot_key_is_the_same_for_the_same_instant_in_any_zone() -> None:
    schedule = parse_schedule({"interval": "1h"})
    instant = utc("2024-10-27T01:00:00")
    keys = {
        slot_key("d", schedule, instant.astimezone(ZoneInfo(zone)))
        for zone in ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
    }
    assert keys == {"d/interval:3600s@1970-01-01T00:00:00Z/2024-10-27T01:00:00Z"}
    with pytest.raises(ValueError, match="timezone-aware"):
        slot_key("d", schedule, datetime(2024, 1, 1))


def test_identity_conflicts() -> None:
    schedules = [
        cron("0 2 * * *", parameters={"region": "eu"}),
        cron("0 2 * * *", parameters={"region": "us"}),
        cron("0 2 * * *", name="us-nightly"),
    ]
    [error] = identity_conflicts(schedules)
    assert error.path == (1, "name")
    assert "schedules[0]" in error.message


def test_schedule_is_hashable_and_checks_invariants() -> None:
    assert hash(cron("0 0 * * *", parameters={"a": [1]})) == hash(cron("0 0 * * *"))
    with pytest.raises(ValueError, match="cron is missing"):
        Schedule(kind="cron")
    with pytest.raises(ValueError, match="whole number of seconds"):
        Schedule(kind="interval", interval=timedelta(milliseconds=10))
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule(kind="interval", interval=timedelta(hours=1), anchor=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule(kind="cron", cron="0 0 * * *", timezone="Europe/Berln")
    with pytest.raises(ValueError, match="not a valid schedule name"):
        Schedule(kind="cron", cron="0 0 * * *", name="a/b")


# --- slots: basics -------------------------------------------------------------


def test_next_slots_are_strictly_after_and_in_the_schedule_zone() -> None:
    schedule = cron("0 * * * *", "Europe/Berlin")
    on_a_slot = utc("2024-06-01T10:00:00")
    slots = next_slots(schedule, on_a_slot, 3)
    assert in_utc(slots) == ["2024-06-01T11:00Z", "2024-06-01T12:00Z", "2024-06-01T13:00Z"]
    assert all(slot.tzinfo == ZoneInfo("Europe/Berlin") for slot in slots)
    assert slots[0].isoformat() == "2024-06-01T13:00:00+02:00"
    just_before = on_a_slot - timedelta(microseconds=1)
    assert in_utc(next_slots(schedule, just_before, 1)) == ["2024-06-01T10:00Z"]


def test_after_may_be_in_any_zone() -> None:
    schedule = cron("30 2 * * *", "Europe/Berlin")
    in_tokyo = datetime(2024, 6, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 00:00 UTC
    fixed_offset = datetime(2024, 6, 1, 5, 0, tzinfo=timezone(timedelta(hours=5)))  # 00:00 UTC
    assert next_slots(schedule, in_tokyo, 2) == next_slots(schedule, fixed_offset, 2)
    assert in_utc(next_slots(schedule, in_tokyo, 1)) == ["2024-06-01T00:30Z"]


def test_naive_times_are_refused() -> None:
    schedule = cron("0 0 * * *")
    with pytest.raises(ValueError, match="after must be a timezone-aware"):
        next_slots(schedule, datetime(2024, 1, 1), 1)
    with pytest.raises(ValueError, match="end must be a timezone-aware"):
        slots_between(schedule, utc("2024-01-01T00:00:00"), datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="count"):
        next_slots(schedule, utc("2024-01-01T00:00:00"), -1)
    assert next_slots(schedule, utc("2024-01-01T00:00:00"), 0) == []


def test_iter_slots_is_lazy_and_agrees_with_next_slots() -> None:
    schedule = cron("*/7 * * * *", "America/New_York")
    after = utc("2024-11-03T05:00:00")
    iterator = iter_slots(schedule, after)
    first = [next(iterator) for _ in range(40)]
    assert first == next_slots(schedule, after, 40)


def test_slots_between_bounds_and_limit() -> None:
    schedule = cron("0 * * * *")
    start, end = utc("2024-01-01T00:00:00"), utc("2024-01-01T05:00:00")
    assert in_utc(slots_between(schedule, start, end)) == [f"2024-01-01T0{h}:00Z" for h in range(1, 6)]
    first_two = slots_between(schedule, start, end, limit=2)
    assert in_utc(first_two) == ["2024-01-01T01:00Z", "2024-01-01T02:00Z"]
    rest = slots_between(schedule, first_two[-1], end, limit=2)
    assert in_utc(rest) == ["2024-01-01T03:00Z", "2024-01-01T04:00Z"]
    assert slots_between(schedule, end, start) == []
    with pytest.raises(ValueError, match="limit"):
        slots_between(schedule, start, end, limit=0)


def test_default_limit_caps_a_long_downtime() -> None:
    schedule = cron("* * * * *")
    slots = slots_between(schedule, utc("2024-01-01T00:00:00"), utc("2024-02-01T00:00:00"))
    assert len(slots) == 10_000
    assert in_utc(slots[-1:]) == ["2024-01-07T22:40Z"]


def test_rare_expression_and_end_of_matches() -> None:
    leap_day = cron("0 12 29 2 *")
    slots = next_slots(leap_day, utc("2024-03-01T00:00:00"), 2)
    assert in_utc(slots) == ["2028-02-29T12:00Z", "2032-02-29T12:00Z"]
    fifth_monday_of_feb = cron("0 0 * 2 MON#5")
    assert in_utc(next_slots(fifth_monday_of_feb, utc("2024-03-01T00:00:00"), 1)) == ["2044-02-29T00:00Z"]


# --- slots: DST, exact instants ---------------------------------------------------

DST_CASES = [
    # zone, cron, after (UTC), expected slots (UTC)
    # Berlin spring forward 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z).
    ("Europe/Berlin", "30 2 * * *", "2024-03-30T12:00", ["2024-03-31T01:00Z", "2024-04-01T00:30Z"]),
    ("Europe/Berlin", "0 2 * * *", "2024-03-30T12:00", ["2024-03-31T01:00Z", "2024-04-01T00:00Z"]),
    ("Europe/Berlin", "0 2,3 * * *", "2024-03-30T12:00", ["2024-03-31T01:00Z", "2024-04-01T00:00Z"]),
    ("Europe/Berlin", "*/15 2 * * *", "2024-03-30T12:00", ["2024-03-31T01:00Z", "2024-04-01T00:00Z"]),
    # Berlin fall back 2024-10-27 03:00 CEST -> 02:00 CET (01:00Z): the first 02:30 only.
    ("Europe/Berlin", "30 2 * * *", "2024-10-26T12:00", ["2024-10-27T00:30Z", "2024-10-28T01:30Z"]),
    ("Europe/Berlin", "0 2,3 * * *", "2024-10-26T12:00",
     ["2024-10-27T00:00Z", "2024-10-27T02:00Z", "2024-10-28T01:00Z"]),
    ("Europe/Berlin", "*/30 2 * * *", "2024-10-26T12:00",
     ["2024-10-27T00:00Z", "2024-10-27T00:30Z", "2024-10-28T01:00Z"]),
    # After the first 02:30 has fired, the second pass does not fire it again.
    ("Europe/Berlin", "30 2 * * *", "2024-10-27T00:45", ["2024-10-28T01:30Z"]),
    ("Europe/Berlin", "30 2 * * *", "2024-10-27T01:10", ["2024-10-28T01:30Z"]),
    # Wildcard/step hours: every real instant, both passes of 02:xx.
    ("Europe/Berlin", "0 */2 * * *", "2024-10-26T23:30",
     ["2024-10-27T00:00Z", "2024-10-27T01:00Z", "2024-10-27T03:00Z"]),
    ("Europe/Berlin", "0 */2 * * *", "2024-03-30T22:30", ["2024-03-30T23:00Z", "2024-03-31T02:00Z"]),
    ("Europe/Berlin", "45 * * * *", "2024-10-27T00:50", ["2024-10-27T01:45Z", "2024-10-27T02:45Z"]),
    # New York spring forward 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z).
    ("America/New_York", "30 2 * * *", "2024-03-09T12:00", ["2024-03-10T07:00Z", "2024-03-11T06:30Z"]),
    # New York fall back 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z): 01:30 repeats.
    ("America/New_York", "30 1 * * *", "2024-11-02T12:00", ["2024-11-03T05:30Z", "2024-11-04T06:30Z"]),
    ("America/New_York", "30 1 * * *", "2024-11-03T06:10", ["2024-11-04T06:30Z"]),
    ("America/New_York", "30 * * * *", "2024-11-03T05:00",
     ["2024-11-03T05:30Z", "2024-11-03T06:30Z", "2024-11-03T07:30Z"]),
    # Lord Howe: a 30-minute shift. Spring 2024-10-06 02:00 +10:30 -> 02:30 +11:00 (15:30Z on the 5th).
    ("Australia/Lord_Howe", "15 2 * * *", "2024-10-05T00:00", ["2024-10-05T15:30Z", "2024-10-06T15:15Z"]),
    ("Australia/Lord_Howe", "30 2 * * *", "2024-10-05T00:00", ["2024-10-05T15:30Z", "2024-10-06T15:30Z"]),
    ("Australia/Lord_Howe", "0 */3 * * *", "2024-10-05T13:00",
     ["2024-10-05T13:30Z", "2024-10-05T16:00Z", "2024-10-05T19:00Z"]),
    # Lord Howe fall back 2024-04-07 02:00 +11:00 -> 01:30 +10:30 (15:00Z on the 6th): 01:30-01:59 repeat.
    ("Australia/Lord_Howe", "45 1 * * *", "2024-04-06T00:00", ["2024-04-06T14:45Z", "2024-04-07T15:15Z"]),
    ("Australia/Lord_Howe", "*/15 * * * *", "2024-04-06T14:40",
     ["2024-04-06T14:45Z", "2024-04-06T15:00Z", "2024-04-06T15:15Z", "2024-04-06T15:30Z"]),
    # No DST, and an offset that is not whole hours.
    ("Asia/Kolkata", "30 2 * * *", "2024-03-30T12:00", ["2024-03-30T21:00Z", "2024-03-31T21:00Z"]),
    ("Asia/Kolkata", "0 * * * *", "2024-10-27T00:00", ["2024-10-27T00:30Z", "2024-10-27T01:30Z"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), DST_CASES)
def test_dst_slots(zone: str, expr: str, after: str, expected: list[str]) -> None:
    slots = next_slots(cron(expr, zone), utc(after), len(expected))
    assert in_utc(slots) == expected


@pytest.mark.parametrize(
    ("zone", "expr", "day", "count"),
    [
        ("Europe/Berlin", "30 * * * *", date(2024, 10, 27), 25),
        ("Europe/Berlin", "30 * * * *", date(2024, 3, 31), 23),
        ("Europe/Berlin", "*/15 * * * *", date(2024, 10, 27), 100),
        ("Europe/Berlin", "*/15 * * * *", date(2024, 3, 31), 92),
        ("Europe/Berlin", "0 0-23 * * *", date(2024, 10, 27), 24),  # fixed hours: 02:00 once
        ("Europe/Berlin", "0 0-23 * * *", date(2024, 3, 31), 23),  # 02:00 and 03:00 coincide
        ("Europe/Berlin", "30 2 * * *", date(2024, 10, 27), 1),
        ("Europe/Berlin", "30 2 * * *", date(2024, 3, 31), 1),
        ("America/New_York", "0 * * * *", date(2024, 11, 3), 25),
        ("America/New_York", "0 * * * *", date(2024, 3, 10), 23),
        ("Australia/Lord_Howe", "30 * * * *", date(2024, 4, 7), 25),
        ("Australia/Lord_Howe", "30 * * * *", date(2024, 10, 6), 24),  # 02:30 exists
        ("Australia/Lord_Howe", "*/15 * * * *", date(2024, 4, 7), 98),
        ("Australia/Lord_Howe", "*/15 * * * *", date(2024, 10, 6), 94),
        ("Asia/Kolkata", "30 * * * *", date(2024, 10, 27), 24),
    ],
)
def test_slots_per_local_day(zone: str, expr: str, day: date, count: int) -> None:
    assert len(local_day(cron(expr, zone), day)) == count


def test_every_quarter_hour_through_fall_back_is_every_15_real_minutes() -> None:
    schedule = cron("*/15 * * * *", "Europe/Berlin")
    slots = local_day(schedule, date(2024, 10, 27))
    instants = [slot.astimezone(UTC) for slot in slots]
    assert {b - a for a, b in zip(instants, instants[1:], strict=False)} == {timedelta(minutes=15)}
    walls = Counter(slot.strftime("%H:%M") for slot in slots)
    assert walls["02:00"] == walls["02:45"] == 2 and walls["03:00"] == 1


# --- intervals -------------------------------------------------------------------


def test_interval_runs_in_absolute_time_across_dst() -> None:
    hourly = parse_schedule({"interval": "1h", "timezone": "Europe/Berlin"})
    assert len(local_day(hourly, date(2024, 10, 27))) == 25
    assert len(local_day(hourly, date(2024, 3, 31))) == 23
    daily = parse_schedule({"interval": "1d", "anchor": "2024-01-01T09:00:00", "timezone": "Europe/Berlin"})
    [winter] = next_slots(daily, utc("2024-01-10T00:00:00"), 1)
    [summer] = next_slots(daily, utc("2024-07-10T00:00:00"), 1)
    assert winter.isoformat() == "2024-01-10T09:00:00+01:00"
    assert summer.isoformat() == "2024-07-10T10:00:00+02:00"


def test_interval_default_anchor_aligns_to_utc_quarter_hours() -> None:
    schedule = parse_schedule({"interval": "15m", "timezone": "Asia/Kathmandu"})
    slots = next_slots(schedule, utc("2024-05-05T10:07:13"), 3)
    assert in_utc(slots) == ["2024-05-05T10:15Z", "2024-05-05T10:30Z", "2024-05-05T10:45Z"]
    assert slots[0].isoformat() == "2024-05-05T16:00:00+05:45"


def test_interval_anchor_is_a_phase_not_a_start() -> None:
    schedule = parse_schedule({"interval": "10m", "anchor": "2030-01-01T00:03:00Z"})
    slots = next_slots(schedule, utc("2024-01-01T00:00:00"), 2)
    assert in_utc(slots) == ["2024-01-01T00:03Z", "2024-01-01T00:13Z"]
    assert in_utc(next_slots(schedule, utc("2024-01-01T00:03:00"), 1)) == ["2024-01-01T00:13Z"]


def test_interval_slots_between() -> None:
    schedule = parse_schedule({"interval": "90s", "anchor": "2024-01-01T00:00:00Z"})
    slots = slots_between(schedule, utc("2024-01-01T00:00:00"), utc("2024-01-01T00:06:00"))
    assert [slot.strftime("%M:%S") for slot in slots] == ["01:30", "03:00", "04:30", "06:00"]


# --- describe --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({"cron": "30 2 * * *", "timezone": "Europe/Berlin"}, "every day at 02:30 (Europe/Berlin)"),
        ({"cron": "@daily"}, "every day at 00:00 (UTC)"),
        ({"cron": "*/15 * * * *"}, "every 15 minutes"),
        ({"cron": "* * * * *"}, "every minute"),
        ({"cron": "0 * * * *"}, "at minute 0 of every hour"),
        ({"cron": "30 * * * *", "timezone": "Asia/Kolkata"}, "at minute 30 of every hour (Asia/Kolkata)"),
        ({"cron": "0 */6 * * *"}, "every 6 hours at minute 0"),
        ({"cron": "0 9 * * MON"}, "every Monday at 09:00 (UTC)"),
        ({"cron": "0 9 * * 0"}, "every Sunday at 09:00 (UTC)"),
        ({"cron": "0 0 1 * *"}, "on day 1 of every month at 00:00 (UTC)"),
        ({"cron": "0 9 * * 1-5", "timezone": "America/New_York"},
         "at 09:00 on Monday through Friday (America/New_York)"),
        ({"interval": "15m"}, "every 15 minutes"),
        ({"interval": "1h"}, "every hour"),
        ({"interval": "90m"}, "every 90 minutes"),
        ({"interval": "2d"}, "every 2 days"),
        ({"interval": "45s"}, "every 45 seconds"),
        ({"interval": "1d", "anchor": "2024-01-01T09:00:00", "timezone": "Europe/Berlin"},
         "every day, counted from 2024-01-01 09:00:00 (Europe/Berlin)"),
    ],
)
def test_describe(raw: dict[str, object], text: str) -> None:
    assert describe(parse_schedule(raw)) == text


# --- why this wrapper: the libraries' own DST behaviour ----------------------------


def test_croniter_fires_a_fixed_time_twice_on_fall_back_and_we_do_not() -> None:
    """Documents the library choice: croniter double-fires 02:30 on a Berlin fall-back day."""
    import croniter as croniter_module  # a test dependency, kept to document the choice of cronsim
    zone = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 10, 26, 12, 0, tzinfo=zone)
    theirs = croniter_module.croniter("30 2 * * *", start)
    their_slots = [theirs.get_next(datetime) for _ in range(3)]
    assert [slot.isoformat() for slot in their_slots] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",  # the second pass: a duplicate run
        "2024-10-28T02:30:00+01:00",
    ]
    ours = next_slots(cron("30 2 * * *", "Europe/Berlin"), start, 2)
    assert [slot.isoformat() for slot in ours] == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]


def test_cronsim_real_time_mode_misses_a_slot_on_a_half_hour_shift_and_we_do_not() -> None:
    """cronsim's own zone-aware iteration skips 03:00 on Lord Howe's spring-forward day."""
    import cronsim

    zone = ZoneInfo("Australia/Lord_Howe")
    start = datetime(2024, 10, 6, 0, 30, tzinfo=zone)
    theirs = cronsim.CronSim("0 */3 * * *", start)
    assert next(theirs).isoformat() == "2024-10-06T06:00:00+11:00"
    ours = next_slots(cron("0 */3 * * *", "Australia/Lord_Howe"), start, 1)
    assert ours[0].isoformat() == "2024-10-06T03:00:00+11:00"
