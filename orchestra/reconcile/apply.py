"""Plan and apply spec trees against the store: the service behind ``plan``,
``apply`` and the daemon's reload.

This is where specs, planning and the store meet: it reads the specs,
reads the stored resources once, computes the (pure) plan and writes it in a
single transaction. Invalid specs raise ``SpecError`` before anything is
written, so a broken file never changes what is running.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from orchestra.diagnostics import SpecError
from orchestra.planning.plan import MANAGER_SPECS, Plan, compute_plan
from orchestra.specs.model import Resource
from orchestra.specs.validate import ParseCache, SpecSet, load_specs
from orchestra.store import ResourceWrite, Store


@dataclass(frozen=True)
class PlanResult:
    specs: SpecSet
    plan: Plan


def plan_specs(store: Store, paths: list[Path], *, prune: bool, now: datetime,
               cache: ParseCache | None = None) -> PlanResult:
    """Validate the specs and compare them with the store; raises SpecError if invalid."""
    stored = store.list_resources()
    hashes = {(s.kind, s.name): s.content_hash for s in stored if s.manager == MANAGER_SPECS}
    specs = load_specs(paths, cache=cache, stored_hashes=hashes)
    if not specs.ok:
        raise SpecError(specs.diagnostics)
    plan = compute_plan(specs.resources, stored, prune=prune, now=now, paused_schedules=store.paused_schedules())
    return PlanResult(specs, plan)


def apply_plan(store: Store, result: PlanResult) -> None:
    """Write the plan's creates, updates, deletes and quiet source moves in one transaction."""
    by_key = {(r.kind, r.name): r for r in result.specs.resources}
    changed = [by_key[(c.kind, c.name)] for c in result.plan.changes if c.action != "delete"]
    upserts = [_write(r) for r in changed + result.plan.moved]
    deletes = [(c.kind, c.name) for c in result.plan.changes if c.action == "delete"]
    if upserts or deletes:
        store.apply_resources(upserts, deletes)


def _write(resource: Resource) -> ResourceWrite:
    return ResourceWrite(
        kind=resource.kind,
        name=resource.name,
        metadata=resource.metadata,
        spec=resource.spec,
        source_file=resource.file,
        source_line=resource.line,
        content_hash=resource.content_hash,
        manager=MANAGER_SPECS,
    )
