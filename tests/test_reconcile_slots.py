"""missedRuns semantics as a table: which owed slots run, which are recorded and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestra.reconcile.slots import MissedRuns, decide_slots

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def ago(*minutes: int) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


@pytest.mark.parametrize(
    ("policy", "deadline", "slots", "expected"),
    [
        ("all", None, ago(30, 20, 10, 0), ["Scheduled"] * 4),
        ("all", "15m", ago(30, 20, 10, 0), ["Missed", "Missed", "Scheduled", "Scheduled"]),
        ("latest", None, ago(30, 20, 10, 0), ["Missed", "Missed", "Missed", "Scheduled"]),
        ("latest", "5m", ago(30, 20, 10), ["Missed", "Missed", "Missed"]),
        ("latest", "15m", ago(30, 20, 10), ["Missed", "Missed", "Scheduled"]),
        ("skip", None, ago(30, 20, 0), ["Missed", "Missed", "Scheduled"]),
        ("skip", "25m", ago(30, 20, 0), ["Missed", "Scheduled", "Scheduled"]),
        ("latest", None, [], []),
    ],
)
def test_policies(policy: str, deadline: str | None, slots: list[datetime], expected: list[str]) -> None:
    spec = {"missedRuns": {"policy": policy, **({"startingDeadline": deadline} if deadline else {})}}
    decisions = decide_slots(slots, NOW, MissedRuns.from_spec(spec), paused=False)
    assert [d.state for d in decisions] == expected
    assert [d.slot for d in decisions] == slots
    assert all(d.reason for d in decisions)


def test_reasons_say_why() -> None:
    latest = decide_slots(ago(30, 0), NOW, MissedRuns.from_spec({}), paused=False)
    assert latest[0].reason == "superseded by a later slot (missedRuns: latest)"
    skip = decide_slots(ago(30), NOW, MissedRuns.from_spec({"missedRuns": {"policy": "skip"}}), paused=False)
    assert skip[0].reason == "30m late (missedRuns: skip)"
    deadline = decide_slots(ago(180), NOW, MissedRuns.from_spec({"missedRuns": {"startingDeadline": "1h"}}), paused=False)
    assert deadline[0].reason == "3h late, beyond startingDeadline"


def test_paused_deployment_records_every_slot_as_skipped() -> None:
    decisions = decide_slots(ago(10, 0), NOW, MissedRuns.from_spec({}), paused=True)
    assert [(d.state, d.reason) for d in decisions] == [("Skipped", "deployment paused")] * 2


def test_default_policy_is_latest_without_deadline() -> None:
    assert MissedRuns.from_spec({}) == MissedRuns("latest", None)
