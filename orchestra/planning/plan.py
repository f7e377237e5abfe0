"""Compute a plan: what applying the specs would change in the store.

Pure: ``compute_plan`` takes the desired resources, the stored ones and the
current time, and returns a ``Plan`` value; it reads no clock and touches no
database. The CLI renders it (``planning.render``), ``apply`` executes it,
the API and UI show it. Keeping it data is what lets all of them agree.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from orchestra.planning.diff import FieldChange, field_diff, hide_plan_secrets, leaves
from orchestra.scheduling import next_slots, parse_schedule
from orchestra.specs.model import Resource

NEXT_RUNS_SHOWN = 3
MANAGER_SPECS = "specs"
MANAGER_API = "api"


class StoredLike(Protocol):
    """What planning needs to know of a stored resource (the store's row type fits)."""

    kind: str
    name: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    content_hash: str
    manager: str
    source_file: str | None
    source_line: int | None
    paused_override: bool | None


@dataclass(frozen=True)
class ScheduleRuns:
    """The next run times of one added or changed schedule, in its zone."""

    schedule: str
    timezone: str
    times: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "timezone": self.timezone, "times": self.times}


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete
    kind: str
    name: str
    source: str | None
    diff: list[FieldChange]
    next_runs: list[ScheduleRuns] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "kind": self.kind,
            "name": self.name,
            "source": self.source,
            "diff": [c.to_json() for c in self.diff],
            "nextRuns": [r.to_json() for r in self.next_runs],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    notes: list[str]
    unchanged: int
    moved: list[Resource]  # same content, new file or line: recorded quietly by apply
    api_managed: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) kept, not in specs

    @property
    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0}
        for change in self.changes:
            counts[change.action] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {"changes": [c.to_json() for c in self.changes], "summary": self.summary, "notes": self.notes,
                "apiManaged": [{"kind": kind, "name": name} for kind, name in self.api_managed]}


def compute_plan(desired: Sequence[Resource], stored: Sequence[StoredLike], *, prune: bool, now: datetime,
                 paused_schedules: Collection[tuple[str, str]] = ()) -> Plan:
    """Compare desired with stored; deletes only with ``prune`` and only spec-managed resources.

    ``paused_schedules`` ((deployment, schedule identity), runtime state) only adds notes.
    """
    stored_by_key = {(s.kind, s.name): s for s in stored}
    desired_keys = {(r.kind, r.name) for r in desired}
    changes: list[Change] = []
    moved: list[Resource] = []
    for resource in desired:
        current = stored_by_key.get((resource.kind, resource.name))
        change = _desired_change(resource, current, now)
        if change:
            changes.append(change)
        elif current and (current.source_file, current.source_line) != (resource.file, resource.line):
            moved.append(resource)
    leftovers = [s for key, s in stored_by_key.items() if key not in desired_keys]
    deletes, notes = _leftover_changes(leftovers, prune)
    notes += _runtime_notes(stored, desired_keys) + _schedule_pause_notes(paused_schedules, desired_keys)
    unchanged = len(desired) - sum(1 for c in changes if c.action != "delete")
    api_managed = sorted(((s.kind, s.name) for s in leftovers if s.manager != MANAGER_SPECS),
                         key=lambda key: (_KIND_ORDER.get(key[0], 9), key[1]))
    return Plan(changes=_ordered(hide_plan_secrets(changes + deletes, desired, stored)), notes=notes, unchanged=unchanged, moved=moved,
                api_managed=api_managed)


def _desired_change(resource: Resource, current: StoredLike | None, now: datetime) -> Change | None:
    if current is None:
        return Change("create", resource.kind, resource.name, resource.source, leaves(resource.body()),
                      _next_runs(resource, None, now))
    if current.content_hash == resource.content_hash and current.manager == MANAGER_SPECS:
        return None
    diff = field_diff({"metadata": current.metadata, "spec": current.spec}, resource.body())
    notes = [f"taken over from the API: {resource.ref} becomes managed by specs"] if current.manager != MANAGER_SPECS else []
    if not diff and not notes:
        return None
    return Change("update", resource.kind, resource.name, resource.source, diff,
                  _next_runs(resource, current.spec, now), notes)


def _leftover_changes(leftovers: list[StoredLike], prune: bool) -> tuple[list[Change], list[str]]:
    """Stored resources absent from the specs: deleted with --prune if specs made them."""
    deletes: list[Change] = []
    notes: list[str] = []
    for stored in leftovers:
        ref = f"{stored.kind}/{stored.name}"
        if stored.manager != MANAGER_SPECS:
            notes.append(f"{ref} is managed by the API (not in specs; never pruned; "
                         "orchestra export prints it as YAML)")
        elif prune:
            deletes.append(Change("delete", stored.kind, stored.name, _stored_source(stored),
                                  [FieldChange("remove", "/", {"metadata": stored.metadata, "spec": stored.spec}, None)]))
        else:
            notes.append(f"{ref} is no longer in the specs; apply --prune deletes it")
    return deletes, notes


def _runtime_notes(stored: Sequence[StoredLike], desired_keys: set[tuple[str, str]]) -> list[str]:
    """Runtime state is not spec: show it so nobody is surprised, and leave it alone."""
    notes = []
    for s in stored:
        if s.paused_override is not None and (s.kind, s.name) in desired_keys:
            state = "paused" if s.paused_override else "resumed"
            notes.append(f"{s.kind}/{s.name} is {state} at runtime (not in specs); apply leaves it {state}")
    return notes


def _schedule_pause_notes(paused: Collection[tuple[str, str]], desired_keys: set[tuple[str, str]]) -> list[str]:
    return [f"Deployment/{deployment} schedule {identity!r} is paused at runtime (not in specs); "
            "apply leaves it paused" for deployment, identity in sorted(paused)
            if ("Deployment", deployment) in desired_keys]


def _stored_source(stored: StoredLike) -> str | None:
    return f"{stored.source_file}:{stored.source_line}" if stored.source_file else None


def _next_runs(resource: Resource, old_spec: dict[str, Any] | None, now: datetime) -> list[ScheduleRuns]:
    """Next times of every schedule that is new or changed (not of untouched ones)."""
    if resource.kind != "Deployment":
        return []
    before = (old_spec or {}).get("schedules") or []
    result = []
    for raw in resource.spec.get("schedules") or []:
        if raw in before or raw.get("active", True) is False:
            continue
        schedule = parse_schedule(raw)
        times = [t.isoformat() for t in next_slots(schedule, now, NEXT_RUNS_SHOWN)]
        result.append(ScheduleRuns(schedule.identity, schedule.timezone, times))
    return result


_KIND_ORDER = {"WorkPool": 0, "WorkQueue": 1, "Deployment": 2}
_ACTION_ORDER = {"create": 0, "update": 1, "delete": 2}


def _ordered(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_ACTION_ORDER[c.action], _KIND_ORDER.get(c.kind, 9), c.name))
