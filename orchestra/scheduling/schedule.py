"""The ``Schedule`` value, its parsing from a spec item, and its identity.

Spec validation calls ``parse_schedule`` (or ``schedule_errors`` to collect
every problem of one item) for each entry of a Deployment's
``spec.schedules``; it prefixes the ``FieldError`` paths with
``spec.schedules[i]`` and attaches file positions. The reconciler builds
idempotency keys with ``slot_key``. Pure: no clock reads, no I/O.

Identity is the part of a schedule that names its slots: the optional
``name``, else the canonical timing. Parameters and ``active`` are not part
of it, so editing them never re-runs or skips a slot; changing the timing of
an unnamed schedule makes it a new schedule (see docs/schedules.md).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from orchestra.durations import parse_duration
from orchestra.errors import FieldError
from orchestra.scheduling.cron import normalize_cron, validate_cron
from orchestra.scheduling.zones import first_instant_at_or_after, load_zone, zone_error

__all__ = [
    "DEFAULT_TIMEZONE",
    "EPOCH",
    "Schedule",
    "ScheduleKind",
    "active_schedules",
    "identity_conflicts",
    "parse_schedule",
    "schedule_errors",
    "slot_key",
]

ScheduleKind = Literal["cron", "interval"]
DEFAULT_TIMEZONE = "UTC"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Default interval anchor: ``15m`` slots fall at :00, :15, :30, :45 UTC."""

FIELDS = ("cron", "interval", "timezone", "anchor", "name", "parameters", "active")
_ALIASES = {"tz": "timezone", "time_zone": "timezone", "anchor_date": "anchor", "anchordate": "anchor"}
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Schedule:
    """One entry of a Deployment's ``schedules``, validated.

    ``anchor`` is only meaningful for intervals: slots are ``anchor + k *
    interval`` for every integer ``k`` (a phase, not a start date); None
    means ``EPOCH``. ``parameters`` holds per-schedule overrides merged over
    the deployment's defaults by the caller.
    """

    kind: ScheduleKind
    cron: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    interval: timedelta | None = None
    anchor: datetime | None = None
    name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)
    active: bool = True

    def __post_init__(self) -> None:
        # Programming errors only: specs go through parse_schedule, which
        # reports user mistakes as FieldErrors before building a Schedule.
        problem = _invariant_error(self)
        if problem:
            raise ValueError(f"invalid Schedule: {problem}")

    @property
    def identity(self) -> str:
        """``name``, else ``cron:<expr>@<zone>`` or ``interval:<n>s@<phase anchor>``."""
        if self.name:
            return self.name
        if self.kind == "cron":
            assert self.cron is not None
            return f"cron:{normalize_cron(self.cron)}@{self.timezone}"
        assert self.interval is not None
        seconds = self.interval // _SECOND
        return f"interval:{seconds}s@{_utc_text(self.phase_anchor)}"

    @property
    def phase_anchor(self) -> datetime:
        """The earliest anchor at or after ``EPOCH`` that gives the same slots.

        Identities use it so that moving an anchor by whole intervals (which
        changes no slot) does not change any idempotency key.
        """
        assert self.interval is not None
        return EPOCH + ((self.anchor or EPOCH) - EPOCH) % self.interval


def _invariant_error(schedule: Schedule) -> str | None:
    if schedule.name is not None and not _NAME.match(schedule.name):
        return f"name {schedule.name!r} is not a valid schedule name"
    if schedule.kind == "cron":
        return _cron_invariant_error(schedule) or zone_error(schedule.timezone)
    if schedule.kind == "interval":
        return _interval_invariant_error(schedule) or zone_error(schedule.timezone)
    return f"kind must be 'cron' or 'interval', got {schedule.kind!r}"


def _cron_invariant_error(schedule: Schedule) -> str | None:
    if schedule.interval is not None or schedule.anchor is not None:
        return "a cron schedule has no interval or anchor"
    return validate_cron(schedule.cron) if schedule.cron is not None else "cron is missing"


def _interval_invariant_error(schedule: Schedule) -> str | None:
    if schedule.cron is not None or schedule.interval is None:
        return "an interval schedule has an interval and no cron"
    if schedule.anchor is not None and schedule.anchor.utcoffset() is None:
        return "anchor must be timezone-aware"
    return _interval_error(schedule.interval)


def _interval_error(interval: timedelta) -> str | None:
    if interval < _SECOND or interval % _SECOND:
        return "an interval must be a whole number of seconds, at least 1s"
    return None


def _utc_text(instant: datetime) -> str:
    """``2024-01-01T00:00:00Z``: seconds precision, the form used in keys."""
    if instant.tzinfo is None:
        raise ValueError("slot instants must be timezone-aware")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slot_key(deployment: str, schedule: Schedule, slot: datetime) -> str:
    """Idempotency key of a scheduled run: built from the spec, never a row id.

    ``nightly-report/cron:30 2 * * *@Europe/Berlin/2024-03-31T01:00:00Z``.
    """
    return f"{deployment}/{schedule.identity}/{_utc_text(slot)}"


def identity_conflicts(schedules: list[Schedule]) -> list[FieldError]:
    """Errors for schedules of one deployment that share an identity.

    Two such schedules would produce the same slot keys, so one of them
    would silently never run. Paths are ``(index, "name")`` relative to the
    ``schedules`` list.
    """
    first_seen: dict[str, int] = {}
    errors = []
    for index, schedule in enumerate(schedules):
        earlier = first_seen.setdefault(schedule.identity, index)
        if earlier != index:
            message = (
                f"schedule has the same identity as schedules[{earlier}] "
                f"({schedule.identity!r}); give one of them a distinct `name`"
            )
            errors.append(FieldError((index, "name"), message))
    return errors


def parse_schedule(raw: Mapping[str, Any]) -> Schedule:
    """Build a ``Schedule`` from a spec item; ``FieldError`` for the first problem."""
    values, errors = _parse_fields(raw)
    if errors:
        raise errors[0]
    return Schedule(**values)


def active_schedules(spec: Mapping[str, Any]) -> list[Schedule]:
    """The schedules of a Deployment spec that owe slots: all but those with ``active: false``.
    An item that does not parse is left out (a stored spec was validated when applied)."""
    found = []
    for raw in spec.get("schedules") or []:
        if isinstance(raw, Mapping) and raw.get("active", True) is not False:
            try:
                found.append(parse_schedule(raw))
            except FieldError:
                continue
    return found


def schedule_errors(raw: Mapping[str, Any]) -> list[FieldError]:
    """Every problem of one spec item, for validation that reports all at once."""
    return _parse_fields(raw)[1]


def _parse_fields(raw: object) -> tuple[dict[str, Any], list[FieldError]]:
    if not isinstance(raw, Mapping):
        return {}, [FieldError((), "a schedule must be a mapping with `cron` or `interval`")]
    values: dict[str, Any] = {}
    errors = _unknown_field_errors(raw)
    for parse in _FIELD_PARSERS:
        try:
            values.update(parse(raw, values))
        except FieldError as error:
            errors.append(error)
    return values, errors


def _unknown_field_errors(raw: Mapping[str, Any]) -> list[FieldError]:
    errors = []
    for key in raw:
        if key not in FIELDS:
            alias = _ALIASES.get(str(key).lower())
            close = [alias] if alias else difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(FIELDS)}"
            errors.append(FieldError((str(key),), f"unknown field {key!r}{hint}"))
    return errors


def _parse_kind(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    has_cron, has_interval = raw.get("cron") is not None, raw.get("interval") is not None
    if has_cron and has_interval:
        raise FieldError(("interval",), "a schedule has either `cron` or `interval`, not both")
    if not has_cron and not has_interval:
        raise FieldError((), "a schedule needs `cron` (e.g. '30 2 * * *') or `interval` (e.g. 15m)")
    return {"kind": "cron" if has_cron else "interval"}


def _parse_timezone(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    zone = raw.get("timezone", DEFAULT_TIMEZONE)
    problem = zone_error(zone)
    if problem:
        raise FieldError(("timezone",), problem)
    return {"timezone": zone}


def _parse_cron(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    expr = raw.get("cron")
    if expr is None:
        return {}
    problem = validate_cron(expr)
    if problem:
        raise FieldError(("cron",), problem)
    if raw.get("anchor") is not None:
        raise FieldError(("anchor",), "`anchor` applies only to interval schedules")
    return {"cron": " ".join(expr.split())}


def _parse_interval(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    value = raw.get("interval")
    if value is None:
        return {}
    try:
        interval = parse_duration(value)
    except ValueError as error:
        raise FieldError(("interval",), str(error)) from None
    problem = _interval_error(interval)
    if problem:
        raise FieldError(("interval",), f"{problem}, got {value!r}")
    return {"interval": interval}


def _parse_anchor(raw: Mapping[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    if raw.get("interval") is None:
        return {}
    value = raw.get("anchor")
    zone_name = values.get("timezone", DEFAULT_TIMEZONE)
    anchor = EPOCH if value is None else _anchor_instant(value, zone_name)
    return {"anchor": anchor}


def _anchor_instant(value: object, zone_name: str) -> datetime:
    """Read an anchor; a time without offset is wall-clock time in the schedule's zone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            message = f"anchor {value!r} is not an ISO 8601 date-time such as '2024-01-01T00:00:00Z'"
            raise FieldError(("anchor",), message) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise FieldError(("anchor",), f"anchor must be an ISO 8601 date-time, got {type(value).__name__}")
    if value.microsecond:
        raise FieldError(("anchor",), "anchor must be a whole second (no fractional seconds)")
    try:
        if value.tzinfo is None:
            return first_instant_at_or_after(value, load_zone(zone_name)).astimezone(UTC)
        return value.astimezone(UTC)
    except OverflowError:
        raise FieldError(("anchor",), f"anchor {value.isoformat()} is out of range") from None


def _parse_parameters(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    parameters = raw.get("parameters")
    if parameters is None:
        return {"parameters": {}}
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise FieldError(("parameters",), "parameters must be a mapping of names to values")
    return {"parameters": copy.deepcopy(dict(parameters))}


def _parse_active(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    active = raw.get("active", True)
    if not isinstance(active, bool):
        raise FieldError(("active",), f"active must be true or false, got {active!r}")
    return {"active": active}


def _parse_name(raw: Mapping[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    name = raw.get("name")
    if name is None:
        return {}
    if not isinstance(name, str) or not _NAME.match(name):
        message = (
            f"schedule name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
        raise FieldError(("name",), message)
    return {"name": name}


_FIELD_PARSERS: tuple[Callable[[Mapping[str, Any], dict[str, Any]], dict[str, Any]], ...] = (
    _parse_kind,
    _parse_timezone,
    _parse_cron,
    _parse_interval,
    _parse_anchor,
    _parse_parameters,
    _parse_active,
    _parse_name,
)
