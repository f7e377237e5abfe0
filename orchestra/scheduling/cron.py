"""Cron expressions: normalization, validation in plain words, wall-clock matching.

The only module in orchestra that imports ``cronsim`` (the layering rule in
STYLE.md: one wrapper per third-party library). ``schedule`` calls
``normalize_cron``/``validate_cron`` when it parses a spec item; ``slots``
calls ``compile_cron`` and iterates ``CronPattern.walls_after`` to get the
local wall-clock times an expression names.

cronsim is only ever given *naive* datetimes here, so it does pure calendar
arithmetic and none of its own DST handling. Turning wall-clock times into
instants, which is where DST rules live, happens in ``slots`` and ``zones``;
that keeps the rules of DESIGN.md in our code, tested, rather than
inherited from a library's heuristics (cronsim's real-time mode misses slots
in zones with 30-minute DST shifts, and decides fixed vs. wildcard by the
minute field too).

Accepted syntax: the classic five fields ``minute hour day-of-month month
day-of-week`` with ``*``, numbers, ranges ``a-b``, lists ``a,b``, steps
``*/n``, ``a-b/n`` and ``a/n``, month and weekday names (``JAN``, ``MON``),
7 as Sunday, cronsim's ``L``, ``LW`` (day of month) and ``5L``, ``MON#2``
(day of week), and the macros below. Not accepted: ``@reboot``, a seconds
field, ``?``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from cronsim import CronSim, CronSimError

__all__ = ["MACROS", "CronPattern", "compile_cron", "explain_cron", "normalize_cron", "validate_cron"]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = (
    (),
    (),
    (),
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"),
)
_FIELD_HINT = "use *, a number, a range like 1-5, a list like 1,15, or a step like */10"
_LEADING_ZEROS = re.compile(r"(?<![0-9])0+(?=[0-9])")
_PROBE_START = datetime(2000, 1, 1)


@dataclass(frozen=True)
class CronPattern:
    """A validated 5-field expression, ready to enumerate wall-clock times.

    ``fixed_hours`` selects the DST rule (DESIGN.md "Schedules"): an hour
    field without ``*`` or ``/`` names fixed local times, each fired once
    per day; otherwise the job fires at every real instant that matches.
    """

    expression: str
    fixed_hours: bool

    def walls_after(self, wall: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock times strictly after ``wall``, ascending.

        ``wall`` must be naive; its microseconds are ignored. The iterator
        ends if no match exists within 50 years (cronsim's horizon).
        """
        assert wall.tzinfo is None, "cron matching works on naive wall-clock times"
        return iter(CronSim(self.expression, wall))


def normalize_cron(expr: str) -> str:
    """Canonical spelling of an expression, used in schedule identities.

    Expands macros, collapses whitespace, upper-cases names and drops
    leading zeros (``02`` -> ``2``). Deliberately shallow: anything deeper
    (sorting lists, folding ``7`` into ``0``) would change the idempotency
    keys of existing schedules whenever the rules were refined.
    """
    text = " ".join(expr.split())
    macro = MACROS.get(text.lower())
    if macro is not None:
        return macro
    return _LEADING_ZEROS.sub("", text.upper())


def validate_cron(expr: str) -> str | None:
    """Return what is wrong with ``expr`` in plain words, or None if it is valid."""
    if not isinstance(expr, str):
        return f"a cron expression must be a string such as '30 2 * * *', got {type(expr).__name__}"
    return _validate_text(" ".join(expr.split()))


@functools.lru_cache(maxsize=4096)
def _validate_text(text: str) -> str | None:
    """The checks of ``validate_cron``, cached: specs repeat a few expressions."""
    if text.startswith("@"):
        return _macro_error(text)
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        return _field_count_error(text, len(fields))
    normalized = normalize_cron(text)
    for index, (written, field) in enumerate(zip(fields, normalized.split(" "), strict=True)):
        if not _field_parses(index, field):
            return _explain_field(index, written, field)
    return _whole_expression_error(normalized)


def _macro_error(text: str) -> str | None:
    if text.lower() in MACROS:
        return None
    if text.lower() == "@reboot":
        return "@reboot is not supported: orchestra schedules runs at times, not at daemon start"
    known = ", ".join(MACROS)
    return f"unknown cron macro {text!r}; use one of {known} or a 5-field expression"


def _field_count_error(text: str, count: int) -> str:
    layout = "minute hour day-of-month month day-of-week"
    if count == 6:
        return (
            f"cron expression {text!r} has 6 fields; orchestra uses the 5-field form "
            f"({layout}) and does not schedule to the second"
        )
    if count == 0:
        return f"cron expression is empty; it needs 5 fields: {layout}"
    return f"cron expression {text!r} has {count} fields; it needs 5: {layout}"


def _field_parses(index: int, field: str) -> bool:
    """Check one field alone by embedding it in ``* * * * *`` for cronsim."""
    probe = ["*"] * 5
    probe[index] = field
    try:
        CronSim(" ".join(probe), _PROBE_START)
    except (CronSimError, ValueError, IndexError):  # cronsim's own errors, and any slip in its parser
        return False
    return True


def _explain_field(index: int, written: str, field: str) -> str:
    """Say which term of a rejected field is wrong and why (``field`` is normalized)."""
    name, (low, high) = FIELD_NAMES[index], _RANGES[index]
    field_text = repr(written)
    for term in field.split(","):
        for number in re.findall(r"\d+", term.split("/")[0].split("#")[0]):
            if not low <= int(number) <= high:
                return f"{name} field {field_text}: {int(number)} is out of range {low}-{high}"
        _, slash, step = term.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            return f"{name} field {field_text}: a step needs a whole number of at least 1 after '/'"
        bounds = term.split("/")[0].split("-")
        if len(bounds) == 2 and all(b.isdigit() for b in bounds) and int(bounds[0]) > int(bounds[1]):
            return f"{name} field {field_text}: range {term.split('/')[0]} goes backwards"
    names = f"; names {_NAMES[index][0]}-{_NAMES[index][-1]} are allowed" if _NAMES[index] else ""
    return f"{name} field {field_text} is not valid: {_FIELD_HINT}, with values {low}-{high}{names}"


def _whole_expression_error(normalized: str) -> str | None:
    """Errors only visible with all fields together, e.g. ``0 0 30 2 *``."""
    try:
        next(iter(CronSim(normalized, _PROBE_START)))
    except (CronSimError, ValueError, IndexError):
        return (
            f"cron expression {normalized!r} names a day that no selected month has "
            "(such as 30 February), so it would never run"
        )
    except StopIteration:
        return f"cron expression {normalized!r} never matches a date"
    return None


@functools.lru_cache(maxsize=1024)
def compile_cron(expr: str) -> CronPattern:
    """Validate and compile an expression; ``ValueError`` with the reason if bad."""
    problem = validate_cron(expr)
    if problem:
        raise ValueError(problem)
    normalized = normalize_cron(expr)
    hour_field = normalized.split(" ")[1]
    return CronPattern(normalized, fixed_hours="*" not in hour_field and "/" not in hour_field)


def explain_cron(expr: str) -> str | None:
    """cronsim's English reading of a valid expression, or None if it has none."""
    try:
        return CronSim(normalize_cron(expr), _PROBE_START).explain()
    except Exception:  # noqa: BLE001 - wording is best effort; describe() falls back to the expression
        return None
