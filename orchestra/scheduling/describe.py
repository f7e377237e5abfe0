"""Schedules in words, for the web UI, ``orchestra get`` and plan output.

Modest on purpose: the common shapes get a short phrase of our own, the
rest go to cronsim's English explanation (via ``cron.explain_cron``), and
anything that fails falls back to quoting the expression. Pure.
"""

from __future__ import annotations

from datetime import timedelta

from orchestra.scheduling.cron import compile_cron, explain_cron
from orchestra.scheduling.schedule import EPOCH, Schedule
from orchestra.scheduling.zones import load_zone

__all__ = ["describe"]

_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_UNITS = ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second"))


def describe(schedule: Schedule) -> str:
    """``every day at 02:30 (Europe/Berlin)``, ``every 15 minutes``, ..."""
    if schedule.kind == "interval":
        return _describe_interval(schedule)
    assert schedule.cron is not None
    return _describe_cron(schedule.cron, schedule.timezone)


def _describe_interval(schedule: Schedule) -> str:
    assert schedule.interval is not None
    text = _every(schedule.interval)
    if schedule.phase_anchor != EPOCH and schedule.anchor is not None:
        local = schedule.anchor.astimezone(load_zone(schedule.timezone))
        text += f", counted from {local:%Y-%m-%d %H:%M:%S} ({schedule.timezone})"
    return text


def _every(interval: timedelta) -> str:
    seconds = interval // timedelta(seconds=1)
    for size, unit in _UNITS:
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    raise AssertionError("unreachable: every whole number is a multiple of 1")


def _describe_cron(expr: str, zone: str) -> str:
    pattern = compile_cron(expr)
    phrase = _common_phrase(pattern.expression.split(" "))
    if phrase is None:
        explained = explain_cron(pattern.expression)
        phrase = explained[:1].lower() + explained[1:] if explained else f"cron {expr!r}"
    if pattern.fixed_hours or zone != "UTC":
        phrase += f" ({zone})"
    return phrase


def _common_phrase(fields: list[str]) -> str | None:
    minute, hour, day, month, weekday = fields
    if (day, month) != ("*", "*"):
        return _monthly_phrase(minute, hour, day, month, weekday)
    if weekday != "*":
        return _weekly_phrase(minute, hour, weekday)
    if hour == "*":
        return _hourly_phrase(minute)
    if minute.isdigit() and hour.startswith("*/") and 24 % int(hour[2:]) == 0:
        return f"every {int(hour[2:])} hours at minute {minute}"
    if minute.isdigit() and hour.isdigit():
        return f"every day at {_clock(hour, minute)}"
    return None


def _hourly_phrase(minute: str) -> str | None:
    if minute == "*":
        return "every minute"
    if minute.isdigit():
        return f"at minute {minute} of every hour"
    if minute.startswith("*/") and 60 % int(minute[2:]) == 0:
        step = int(minute[2:])
        return "every minute" if step == 1 else f"every {step} minutes"
    return None


def _weekly_phrase(minute: str, hour: str, weekday: str) -> str | None:
    name = _weekday_name(weekday)
    if name and minute.isdigit() and hour.isdigit():
        return f"every {name} at {_clock(hour, minute)}"
    return None


def _monthly_phrase(minute: str, hour: str, day: str, month: str, weekday: str) -> str | None:
    simple_time = minute.isdigit() and hour.isdigit()
    if simple_time and day.isdigit() and month == "*" and weekday == "*":
        return f"on day {day} of every month at {_clock(hour, minute)}"
    return None


def _weekday_name(field: str) -> str | None:
    if field.isdigit():
        return _WEEKDAYS[int(field)]
    if field in _WEEKDAY_NAMES:
        return _WEEKDAYS[_WEEKDAY_NAMES.index(field)]
    return None


def _clock(hour: str, minute: str) -> str:
    return f"{int(hour):02d}:{int(minute):02d}"
