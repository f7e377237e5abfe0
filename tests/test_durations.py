"""Durations as written in specs: the accepted forms, the errors, the round trip."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.durations import format_duration, parse_delay, parse_duration


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d 2h 3m 4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5s", timedelta(milliseconds=500)),
        ("15M", timedelta(minutes=15)),
        (" 15m ", timedelta(minutes=15)),
        ("90", timedelta(seconds=90)),
        ("2.25", timedelta(seconds=2.25)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (0.1, timedelta(milliseconds=100)),
        ("PT15M", timedelta(minutes=15)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,5S", timedelta(milliseconds=500)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P2W", timedelta(weeks=2)),
        ("P1D", timedelta(days=1)),
        ("pt15m", timedelta(minutes=15)),
        ("PT36H", timedelta(hours=36)),
    ],
)
def test_parse_duration_accepts(written: str | int | float, expected: timedelta) -> None:
    assert parse_duration(written) == expected


@pytest.mark.parametrize(
    ("written", "message_part"),
    [
        ("", "is not a duration"),
        ("abc", "is not a duration"),
        ("15", None),  # valid: guard that the table below is not vacuous
        ("500ms", "milliseconds are not supported"),
        ("1m30", "is not a duration"),
        ("30m1h", "is not a duration"),
        ("1h1h", "is not a duration"),
        ("1e3", "is not a duration"),
        ("1y", "is not a duration"),
        ("0", "greater than zero"),
        ("0s", "greater than zero"),
        ("PT0S", "greater than zero"),
        (0, "greater than zero"),
        (-5, "greater than zero"),
        ("-5m", "negative"),
        ("P1M", "years or months"),
        ("P1Y", "years or months"),
        ("P1Y2M3D", "years or months"),
        ("P", "is not a duration"),
        ("PT", "is not a duration"),
        ("P1DT", "is not a duration"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        ([1], "expected a duration"),
        (float("inf"), "not a finite"),
        (float("nan"), "not a finite"),
        ("99999999999d", "not a finite"),
    ],
)
def test_parse_duration_rejects(written: object, message_part: str | None) -> None:
    if message_part is None:
        parse_duration(written)  # type: ignore[arg-type]
        return
    with pytest.raises(ValueError, match=message_part):
        parse_duration(written)  # type: ignore[arg-type]


@pytest.mark.parametrize("written", ["0", "0s", "0m", "PT0S", 0, 0.0])
def test_a_delay_may_be_zero(written: str | int | float) -> None:
    assert parse_delay(written) == timedelta(0)


def test_a_delay_is_otherwise_a_duration() -> None:
    assert parse_delay("1m30s") == parse_duration("1m30s") == timedelta(seconds=90)
    for negative in ("-5m", -5, -0.5):
        with pytest.raises(ValueError, match="negative"):
            parse_delay(negative)
    for wrong in ("soon", True, None):
        with pytest.raises(ValueError, match="duration"):
            parse_delay(wrong)  # type: ignore[arg-type]


def test_error_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("soon")
    message = str(caught.value)
    for example in ("90s", "15m", "1h30m", "PT15M"):
        assert example in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(days=1), "1d"),
        (timedelta(days=14), "14d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(milliseconds=500), "0.5s"),
        (timedelta(minutes=1, microseconds=250_000), "1m0.25s"),
        (timedelta(0), "0s"),
        (timedelta(minutes=-15), "-15m"),
    ],
)
def test_format_duration(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@settings(max_examples=100, deadline=None)
@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=10_000)))
def test_format_then_parse_is_identity(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 30), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)
)
def test_compact_and_iso_forms_agree(days: int, hours: int, minutes: int, seconds: int) -> None:
    if days == hours == minutes == seconds == 0:
        return
    compact = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    iso = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    expected = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    assert parse_duration(compact) == parse_duration(iso) == expected
    assert format_duration(expected) == compact
