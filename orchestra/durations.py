"""Durations as people write them in specs: ``90s``, ``15m``, ``1h30m``, ``PT15M``.

A leaf module (standard library only). Spec validation calls
``parse_duration`` for every duration field (schedule intervals, retry
delays, timeouts, ``startingDeadline``); plan rendering and the CLI call
``format_duration`` to show a ``timedelta`` the way a user would write it.

Accepted forms, all positive (``parse_delay``, for a wait, also takes zero):

* a plain number of seconds: ``90``, ``1.5``, ``"90"``;
* units ``w d h m s`` in that order, each at most once, with optional spaces:
  ``90s``, ``15m``, ``1h30m``, ``1d 12h``, ``1.5h``;
* ISO 8601 durations without years or months (their length varies):
  ``PT15M``, ``P1DT2H``, ``PT0.5S``, ``P2W``.

There is no millisecond unit on purpose: nothing orchestra schedules or
waits for is that fine-grained, and ``ms`` next to ``m`` invites typos.
Values are kept to microsecond precision, the resolution of ``timedelta``.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["parse_duration", "parse_delay", "format_duration", "ACCEPTED_FORMS"]

ACCEPTED_FORMS = (
    "a number of seconds (90), a number with units d, h, m, s "
    "(90s, 15m, 1h30m, 1d) or an ISO 8601 duration (PT15M, P1DT2H)"
)

_NUMBER = r"\d+(?:[.,]\d+)?"
_COMPACT = re.compile(
    rf"""^\s*
    (?:(?P<w>{_NUMBER})\s*w\s*)?
    (?:(?P<d>{_NUMBER})\s*d\s*)?
    (?:(?P<h>{_NUMBER})\s*h\s*)?
    (?:(?P<m>{_NUMBER})\s*m\s*)?
    (?:(?P<s>{_NUMBER})\s*s\s*)?
    $""",
    re.IGNORECASE | re.VERBOSE,
)
_ISO = re.compile(
    rf"""^P
    (?:(?P<w>{_NUMBER})W)?
    (?:(?P<d>{_NUMBER})D)?
    (?:T
        (?:(?P<h>{_NUMBER})H)?
        (?:(?P<m>{_NUMBER})M)?
        (?:(?P<s>{_NUMBER})S)?
    )?$""",
    re.IGNORECASE | re.VERBOSE,
)
_PLAIN_NUMBER = re.compile(rf"^\s*{_NUMBER}\s*$")
_UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_MICROSECOND = timedelta(microseconds=1)


def parse_duration(value: str | int | float) -> timedelta:
    """Turn a spec duration into a positive ``timedelta`` (see ``_parse``).

    Cached for plain strings and numbers: the worker parses the same grace
    period for every run it starts. Anything else (``True``, which is not
    one second; a list) is parsed, and refused, uncached.
    """
    if type(value) in (str, int, float):
        return _cached(value)
    return _parse(value)


def parse_delay(value: str | int | float) -> timedelta:
    """``parse_duration`` for a wait, which may be zero: a retry ``delay`` of ``0s``
    retries at once, as leaving the delay out does."""
    try:
        return parse_duration(value)  # the usual case, and cached
    except ValueError:
        length = _measure(value)  # raises again for what is no duration at all
        if length == timedelta(0):
            return length
        if length is not None and length < timedelta(0):
            raise ValueError(f"duration {value!r} is negative") from None
        raise


@functools.lru_cache(maxsize=1024)
def _cached(value: str | int | float) -> timedelta:
    return _parse(value)


def _parse(value: str | int | float) -> timedelta:
    """Turn a spec duration into a positive ``timedelta``.

    Raises ``ValueError`` whose message names the accepted forms, because the
    message ends up verbatim in a diagnostic next to the user's field.
    """
    return _positive(_measure(value), value)


def _measure(value: str | int | float) -> timedelta | None:
    """The length ``value`` writes (None: not representable); ``ValueError`` if it is not
    a duration at all."""
    if isinstance(value, bool):  # bool is an int; `true` is never a duration
        raise ValueError(f"expected a duration, got {value!r}: use {ACCEPTED_FORMS}")
    if isinstance(value, int | float):
        return _from_seconds(Decimal(repr(value)) if _finite(value) else None)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}: use {ACCEPTED_FORMS}")
    return _parse_text(value)


def _finite(value: int | float) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _parse_text(text: str) -> timedelta | None:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"duration {text!r} is negative")
    if _PLAIN_NUMBER.match(stripped):
        return _from_seconds(_decimal(stripped))
    if stripped[:1] in ("P", "p"):
        return _parse_iso(text, stripped)
    match = _COMPACT.match(stripped)
    if not stripped or match is None or not any(match.groupdict().values()):
        raise ValueError(_not_a_duration(text))
    return _from_parts(match.groupdict())


def _parse_iso(text: str, stripped: str) -> timedelta:
    date_part = stripped.upper().partition("T")[0]
    if "Y" in date_part or "M" in date_part:
        raise ValueError(
            f"duration {text!r} uses years or months, whose length varies; "
            "use weeks, days or smaller units (e.g. P30D)"
        )
    match = _ISO.match(stripped)
    parts = match.groupdict() if match else {}
    time_part = stripped.upper().partition("T")[2] if "T" in stripped.upper() else None
    if not any(parts.values()) or time_part == "":
        raise ValueError(_not_a_duration(text))
    return _from_parts(parts)


def _not_a_duration(text: str) -> str:
    hint = " (milliseconds are not supported)" if text.strip().lower().endswith("ms") else ""
    return f"{text!r} is not a duration{hint}: use {ACCEPTED_FORMS}"


def _decimal(number: str) -> Decimal:
    try:
        return Decimal(number.strip().replace(",", "."))
    except InvalidOperation as exc:  # the regexes make this unreachable; be explicit anyway
        raise ValueError(f"{number!r} is not a number") from exc


def _from_parts(parts: dict[str, str | None]) -> timedelta:
    seconds = sum(
        (_decimal(amount) * _UNIT_SECONDS[unit] for unit, amount in parts.items() if amount),
        Decimal(0),
    )
    return _from_seconds(seconds)


def _from_seconds(seconds: Decimal | None) -> timedelta | None:
    """Exact decimal seconds -> timedelta, rounded to the microsecond."""
    if seconds is None:
        return None
    micros = int((seconds * 1_000_000).to_integral_value())
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        return None


def _positive(result: timedelta | None, original: object) -> timedelta:
    if result is None:
        raise ValueError(f"duration {original!r} is not a finite, representable length of time")
    if result <= timedelta(0):
        raise ValueError(f"duration {original!r} must be greater than zero")
    return result


def format_duration(td: timedelta) -> str:
    """Render a ``timedelta`` in the compact unit form, e.g. ``1h30m``.

    The output always parses back to the same value with ``parse_duration``
    (for positive values), so plans can show durations the way specs hold
    them. Weeks are not used: ``14d`` reads better than ``2w``.
    """
    if td < timedelta(0):
        return "-" + format_duration(-td)
    total_micros = td // _MICROSECOND
    whole, micros = divmod(total_micros, 1_000_000)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    out = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if seconds or micros or not out:
        out += _format_seconds(seconds, micros)
    return out


def _format_seconds(seconds: int, micros: int) -> str:
    if not micros:
        return f"{seconds}s"
    fraction = f"{micros:06d}".rstrip("0")
    return f"{seconds}.{fraction}s"
