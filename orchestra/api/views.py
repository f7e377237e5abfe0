"""Resources as the API shows them: the stored shape plus their status.

Status is what a person looks at before acting: paused or not, where the
resource comes from, the next slots of each schedule (in their zones, with
the words ``scheduling.describe`` gives them) and the spec errors that keep
it at its last good state. Pure functions of store values and a time; the
resource routes (``api.routes_resources``) call them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestra.api.errors import InvalidQuery
from orchestra.api.shapes import resource_json
from orchestra.errors import FieldError
from orchestra.scheduling import Schedule, describe, iter_slots, next_slots, parse_schedule
from orchestra.store import StoredResource

NEXT_RUNS = 5


def resource_view(resource: StoredResource, spec_errors: Sequence[dict[str, Any]], now: datetime,
                  paused_schedules: Collection[tuple[str, str]] = (),
                  pool: StoredResource | None = None) -> dict[str, Any]:
    """``resource_json`` plus pool, queue, the spec errors that concern it and its next runs
    (``paused_schedules``: (deployment, identity) pairs paused at runtime)."""
    spec = resource.spec
    paused = {identity for deployment, identity in paused_schedules if deployment == resource.name}
    return {
        **resource_json(resource, pool),  # a deployment's pool marks its secret job variables
        "pool": None if resource.kind == "WorkPool" else spec.get("pool"),
        "queue": (spec.get("queue") or "default") if resource.kind == "Deployment" else None,
        "specErrors": errors_of(resource, spec_errors),
        "nextRuns": next_runs(spec, now, paused=paused) if resource.kind == "Deployment" else [],
    }


def errors_of(resource: StoredResource, spec_errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diagnostics naming the resource, or in the file that defines it."""
    ref = f"{resource.kind}/{resource.name}"
    return [d for d in spec_errors
            if d.get("resource") == ref or (resource.source_file is not None and d.get("file") == resource.source_file)]


def schedules_of(spec: dict[str, Any]) -> list[Schedule]:
    """The deployment's schedules; a stored one that no longer parses is left out, not fatal."""
    parsed = []
    for raw in spec.get("schedules") or []:
        try:
            parsed.append(parse_schedule(raw))
        except FieldError:
            continue
    return parsed


def next_runs(spec: dict[str, Any], now: datetime, count: int = NEXT_RUNS,
              paused: Collection[str] = ()) -> list[dict[str, Any]]:
    """Each schedule's next times; none for an inactive or paused one (it makes no runs)."""
    return [{"schedule": s.identity, "description": describe(s), "timezone": s.timezone, "active": s.active,
             "paused": s.identity in paused,
             "times": [t.isoformat() for t in next_slots(s, now, count)] if s.active and s.identity not in paused
             else []}
            for s in schedules_of(spec)]


def upcoming(spec: dict[str, Any], now: datetime, count: int, paused: Collection[str] = ()) -> list[dict[str, Any]]:
    """The next ``count`` slots of all active, unpaused schedules, in time order, each in its own zone."""
    active = [s for s in schedules_of(spec) if s.active and s.identity not in paused]
    slots = itertools.islice(_merged(active, now), count)
    return [{"time": local.isoformat(), "utc": local.astimezone(UTC).isoformat(), "schedule": s.identity,
             "description": describe(s)} for local, s in slots]


def _merged(schedules: list[Schedule], after: datetime) -> Iterator[tuple[datetime, Schedule]]:
    streams = [_keyed(index, s, after) for index, s in enumerate(schedules)]
    for _, _, local, schedule in heapq.merge(*streams):
        yield local, schedule


def _keyed(index: int, schedule: Schedule, after: datetime) -> Iterator[tuple[datetime, int, datetime, Schedule]]:
    for slot in iter_slots(schedule, after):
        yield slot.astimezone(UTC), index, slot, schedule


# -- list filters ---------------------------------------------------------------------


def label_selector(values: Sequence[str]) -> dict[str, str]:
    """``["team=data", "tier=1"]`` -> ``{"team": "data", "tier": "1"}``; every pair must match."""
    selector = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise InvalidQuery("label", f"expected KEY=VALUE, got {value!r}")
        selector[key] = wanted
    return selector


def matches(resource: StoredResource, *, labels: dict[str, str], pool: str | None, name: str | None) -> bool:
    own_labels = resource.metadata.get("labels") or {}
    if any(k not in own_labels or str(own_labels[k]) != v for k, v in labels.items()):
        return False
    resource_pool = resource.name if resource.kind == "WorkPool" else resource.spec.get("pool")
    if pool is not None and resource_pool != pool:
        return False
    return name is None or name in resource.name
