"""Scheduling: schedules from specs, the slots they owe, and their idempotency keys.

Pure functions of values (time is always passed in); the reconciler, the
planner, the CLI and the API call them. This package is the only place that
imports ``cronsim``. See docs/schedules.md for the user-facing rules.
"""

from orchestra.scheduling.cron import MACROS, normalize_cron, validate_cron
from orchestra.scheduling.describe import describe
from orchestra.scheduling.schedule import (
    DEFAULT_TIMEZONE,
    EPOCH,
    Schedule,
    ScheduleKind,
    active_schedules,
    identity_conflicts,
    parse_schedule,
    schedule_errors,
    slot_key,
)
from orchestra.scheduling.slots import DEFAULT_LIMIT, iter_slots, next_slots, slots_between
from orchestra.scheduling.zones import zone_error

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_TIMEZONE",
    "EPOCH",
    "MACROS",
    "Schedule",
    "ScheduleKind",
    "active_schedules",
    "describe",
    "identity_conflicts",
    "iter_slots",
    "next_slots",
    "normalize_cron",
    "parse_schedule",
    "schedule_errors",
    "slot_key",
    "slots_between",
    "validate_cron",
    "zone_error",
]
