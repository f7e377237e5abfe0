"""Which owed slots run and which are recorded as not run: a pure decision.

The scheduler hands over every slot a schedule owes since its last stored
slot, with the current time and the deployment's policies; this module
returns, for each slot, the state its run is created in and why. No store,
no clock: the table-driven tests in ``tests/test_reconcile_slots.py`` pin the
``missedRuns`` semantics down.

- ``all``: every owed slot runs, unless it is later than ``startingDeadline``.
- ``latest``: only the newest owed slot within the deadline runs; older ones
  are recorded ``Missed`` (superseded).
- ``skip``: a slot runs only if it is on time (within ``startingDeadline``,
  default ``ON_TIME``); late ones are ``Missed``.
A paused deployment (or a paused schedule) owes its slots too: they are
recorded ``Skipped``, with the reason the caller gives ("deployment paused",
"schedule paused").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestra.durations import parse_duration

SCHEDULED, MISSED, SKIPPED = "Scheduled", "Missed", "Skipped"
ON_TIME = timedelta(seconds=60)  # how late a slot may start under `skip` without a deadline


@dataclass(frozen=True)
class MissedRuns:
    policy: str  # skip | latest | all
    deadline: timedelta | None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MissedRuns:
        raw = spec.get("missedRuns") or {}
        deadline = raw.get("startingDeadline")
        return cls(raw.get("policy", "latest"), parse_duration(deadline) if deadline is not None else None)


@dataclass(frozen=True)
class SlotDecision:
    slot: datetime
    state: str
    reason: str


def decide_slots(slots: Sequence[datetime], now: datetime, policy: MissedRuns, *, paused: bool,
                 pause_reason: str = "deployment paused") -> list[SlotDecision]:
    """The state each owed slot's run starts in, oldest first."""
    if paused:
        return [SlotDecision(s, SKIPPED, pause_reason) for s in slots]
    if policy.policy == "skip":
        grace = policy.deadline or ON_TIME
        return [_on_time(s, now, grace) or SlotDecision(s, MISSED, f"{_late(s, now)} late (missedRuns: skip)")
                for s in slots]
    within = [s for s in slots if policy.deadline is None or now - s <= policy.deadline]
    keep = set(within[-1:]) if policy.policy == "latest" else set(within)
    return [_decision(s, now, s in keep, policy) for s in slots]


def _on_time(slot: datetime, now: datetime, grace: timedelta) -> SlotDecision | None:
    return SlotDecision(slot, SCHEDULED, "scheduled") if now - slot <= grace else None


def _decision(slot: datetime, now: datetime, runs: bool, policy: MissedRuns) -> SlotDecision:
    if runs:
        return SlotDecision(slot, SCHEDULED, "scheduled" if now - slot <= ON_TIME else f"catching up, {_late(slot, now)} late")
    if policy.deadline is not None and now - slot > policy.deadline:
        return SlotDecision(slot, MISSED, f"{_late(slot, now)} late, beyond startingDeadline")
    return SlotDecision(slot, MISSED, "superseded by a later slot (missedRuns: latest)")


def _late(slot: datetime, now: datetime) -> str:
    seconds = int((now - slot).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
