"""The scheduler: schedules become runs, each slot exactly once.

Called by the daemon loop as ``tick(now)``, which returns when it next needs
to be called; tests drive it with an injected time. It keeps, in memory, the
next slot of every active schedule, so a tick with nothing due costs no
query. When slots fall due it inserts their runs with the idempotency key of
``scheduling.slot_key``; the store's unique constraint makes a repeated
insert (a restart, a reload, a second daemon) a no-op. The next slot always
continues from the last stored slot, never from "now", so downtime is
accounted for (``reconcile.slots`` decides what runs and what is recorded
as missed) and a clock stepping back never repeats a slot. A paused
schedule (``operations.set_schedule_paused``) stays tracked and owes its
slots like a paused deployment: they are recorded Skipped ("schedule
paused"); pausing and resuming bump the resource marker, so the next tick
re-reads them.

When several daemons share a store, one at a time materializes (DESIGN.md):
the one holding the store's ``leadership("scheduler")``, a lock that dies with
its holder. The others stand by and ask again every second, so a leader
killed is replaced within about a second, and the new one owes the slots
since the last stored one, as after any downtime.

With ``ahead`` (the daemon gives ``PREPARE_AHEAD``), a tick also makes the run
of each slot falling due within that time, Scheduled for its slot: when
hundreds of deployments share a cron boundary, their rows are written before
it, and at the boundary the worker only claims (it sleeps until the slot,
see ``Store.next_due_time``). Only slots whose run cannot depend on the
moment: not paused, and no ``onLimit`` other than ``enqueue`` (skipping or
cancelling depends on what runs at the slot). A deployment or schedule
paused after its next run was made has that run recorded Skipped as the
pause is seen, as if the slot had come while paused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from orchestra.reconcile.operations import run_policy
from orchestra.reconcile.slots import SCHEDULED, MissedRuns, SlotDecision, decide_slots
from orchestra.scheduling import Schedule, active_schedules, next_slots, slot_key, slots_between
from orchestra.store import ACTIVE, CANCELLING, Leadership, NewRun, Run, Store, StoredResource, TransitionRequest

log = logging.getLogger("orchestra.scheduler")
BATCH = 5_000
PREPARE_AHEAD = timedelta(seconds=4)  # how long before its slot a run is made (see the module docstring)
LEAD_RETRY = timedelta(seconds=1)  # how often a daemon that does not lead asks again


@dataclass
class Tracked:
    """One active schedule of one deployment, and where it stands."""

    deployment: StoredResource
    schedule: Schedule
    cursor: datetime  # last slot accounted for (UTC)
    next_slot: datetime | None  # UTC
    paused: bool = False  # this schedule alone is paused (runtime state)


class Scheduler:
    def __init__(self, store: Store, lead: Leadership | None = None) -> None:
        self.store = store
        self.tracked: list[Tracked] = []
        self._marker: Any = None
        self._lead = lead if lead is not None else store.leadership("scheduler")
        self._leading: bool | None = None  # as last seen, to log the changes only

    def tick(self, now: datetime, ahead: timedelta = timedelta(0)) -> datetime | None:
        """Materialize every slot due at ``now``, and make the runs of slots due within
        ``ahead`` that may be made early; return when the next tick is needed.

        Only while this daemon leads (``store.leadership``): another one asks again
        every ``LEAD_RETRY``, and reads everything afresh once it leads.
        """
        if not self.ask_lead():
            self._marker = None
            self.tracked = []
            return now + LEAD_RETRY
        marker = self.store.resource_marker()
        if marker != self._marker:
            self.reload(now)
            self._marker = marker
        due = [t for t in self.tracked if t.next_slot is not None and t.next_slot <= now]
        if due:
            self._materialize(due, now)
        if ahead:
            soon = [t for t in self.tracked
                    if t.next_slot is not None and t.next_slot <= now + ahead and _preparable(t)]
            if soon:
                self._prepare(soon)
        return min((t.next_slot - ahead if ahead and _preparable(t) else t.next_slot
                    for t in self.tracked if t.next_slot), default=None)

    @property
    def leading(self) -> bool | None:
        """Whether this daemon materializes the schedules, as its last tick found; None before."""
        return self._leading

    def close(self) -> None:
        """Give up the lead (a clean stop): a daemon standing by takes it at its next tick."""
        self._lead.release()
        self._leading = None

    def ask_lead(self) -> bool:
        """Whether this daemon leads, taking the lead if it is free (each tick asks too)."""
        leading = self._lead.held()
        if leading != self._leading:
            if leading:
                log.info("this daemon now materializes the schedules")
            else:
                log.info("another daemon materializes the schedules; this one stands by")
            self._leading = leading
        return leading

    def invalidate(self) -> None:
        """Forget what is in memory; the next tick re-reads the store (after an error)."""
        self._marker = None

    def reload(self, now: datetime) -> None:
        """Re-read deployments: pick up new and changed schedules, withdraw removed ones."""
        deployments = self.store.list_resources("Deployment")
        schedules = [(d, schedule) for d in deployments for schedule in active_schedules(d.spec)]
        last = self.store.last_slots([(d.name, schedule.identity) for d, schedule in schedules])
        paused = self.store.paused_schedules()
        spans = self.store.schedule_spans()
        self.tracked = [self._track(d, schedule, last, spans, now, paused) for d, schedule in schedules]
        waiting = self.store.runs_in_states({"Scheduled"})
        self._withdraw_removed(deployments, waiting, now)
        self._skip_prepared_of_paused(waiting, now)

    def _track(self, deployment: StoredResource, schedule: Schedule, last: dict[tuple[str, str], datetime],
               spans: dict[tuple[str, str], datetime | None], now: datetime,
               paused: set[tuple[str, str]]) -> Tracked:
        # A schedule owes the slots after its last one, and none from before it came
        # (back) into the spec (``since``): a schedule never run starts owing from then,
        # so a slot that fell due while no daemon ran is still accounted for.
        key = (deployment.name, schedule.identity)
        since = spans.get(key)
        latest = last.get(key)
        if latest is None:
            cursor = min(since or deployment.updated_at, now)
        else:
            cursor = max(latest, since) if since else latest
        return Tracked(deployment, schedule, cursor, _next_after(schedule, cursor), paused=key in paused)

    def _withdraw_removed(self, deployments: list[StoredResource], waiting: list[Run], now: datetime) -> None:
        keep: dict[str, set[str]] = {d.name: set() for d in deployments}
        for tracked in self.tracked:
            keep[tracked.deployment.name].add(tracked.schedule.identity)
        # only deployments holding a waiting run of a schedule they no longer have:
        # a reload of 1,000 unchanged deployments then writes nothing
        stale = {r.deployment for r in waiting
                 if r.schedule_identity and r.schedule_identity not in keep.get(r.deployment, ())}
        for name in sorted(stale):
            withdrawn = self.store.delete_future_scheduled(name, keep.get(name, set()), now)
            if withdrawn:
                log.info("withdrew %d scheduled run(s) of %s: schedule removed or changed", withdrawn, name)

    def _skip_prepared_of_paused(self, waiting: list[Run], now: datetime) -> None:
        """Runs made ahead of their slot (see ``PREPARE_AHEAD``) for a schedule paused
        since: recorded Skipped, as the slot would have been."""
        paused = {(t.deployment.name, t.schedule.identity): _pause_reason(t)
                  for t in self.tracked if t.paused or t.deployment.paused}
        requests = [TransitionRequest(run.id, "Skipped", paused[key], expect={"Scheduled"})
                    for run in waiting
                    if (key := (run.deployment, run.schedule_identity or "")) in paused
                    and run.attempt == 1 and run.slot_time is not None and run.slot_time > now]
        if requests:
            skipped = sum(isinstance(result, Run) for result in self.store.transition_many(requests))
            log.info("recorded %d run(s) made ahead of their slot as Skipped: paused since", skipped)

    def _prepare(self, soon: list[Tracked]) -> None:
        """Make the run of each tracked schedule's next slot now, Scheduled for the slot."""
        new_runs = []
        for tracked in soon:
            assert tracked.next_slot is not None
            new_runs.append(self._new_run(tracked, SlotDecision(tracked.next_slot, SCHEDULED, "scheduled")))
            tracked.cursor = tracked.next_slot
            tracked.next_slot = _next_after(tracked.schedule, tracked.cursor)
        self.store.insert_scheduled_runs(new_runs)

    def _materialize(self, due: list[Tracked], now: datetime) -> None:
        """Insert the runs of every due schedule in one transaction: a cron boundary
        shared by many deployments costs one write, not one per deployment."""
        new_runs: list[NewRun] = []
        for tracked in due:
            slots = slots_between(tracked.schedule, tracked.cursor, now, limit=BATCH)
            deployment = tracked.deployment
            decisions = decide_slots(slots, now, MissedRuns.from_spec(deployment.spec),
                                     paused=deployment.paused or tracked.paused, pause_reason=_pause_reason(tracked))
            decisions = self._apply_concurrency(deployment, decisions)
            new_runs += [self._new_run(tracked, d) for d in decisions]
            for decision in decisions:
                log.info("%s: slot %s %s (%s)", deployment.name, decision.slot.isoformat(), decision.state,
                         decision.reason)
            if slots:
                tracked.cursor = slots[-1]
            tracked.next_slot = _next_after(tracked.schedule, tracked.cursor)
        if new_runs:
            self.store.insert_scheduled_runs(new_runs)

    def _apply_concurrency(self, deployment: StoredResource, decisions: list[SlotDecision]) -> list[SlotDecision]:
        """``onLimit: skip`` records a slot Skipped; ``cancel-running`` makes room for it."""
        concurrency = deployment.spec.get("concurrency")
        if not concurrency or not any(d.state == SCHEDULED for d in decisions):
            return decisions
        limit, on_limit = concurrency["limit"], concurrency.get("onLimit", "enqueue")
        if on_limit == "enqueue":
            return decisions
        busy = self.store.runs_in_states(ACTIVE | {SCHEDULED}, deployment=deployment.name)
        if on_limit == "cancel-running":
            self._cancel_for_newer(busy)
            return decisions
        return _skip_over_limit(decisions, len(busy), limit)

    def _cancel_for_newer(self, busy: list[Any]) -> None:
        reason = "cancelled for a newer run (onLimit: cancel-running)"
        for run in busy:
            target = "Cancelled" if run.state == SCHEDULED else CANCELLING
            if run.state != CANCELLING:
                try:
                    self.store.transition(run.id, target, reason, expect={run.state})
                except Exception as exc:  # the run moved on meanwhile; nothing to cancel
                    log.debug("could not cancel %s: %s", run.id, exc)

    def _new_run(self, tracked: Tracked, decision: SlotDecision) -> NewRun:
        spec = tracked.deployment.spec
        return NewRun(
            deployment=tracked.deployment.name,
            pool=spec["pool"],
            queue=spec.get("queue") or "default",
            scheduled_time=decision.slot,
            trigger="schedule",
            idempotency_key=slot_key(tracked.deployment.name, tracked.schedule, decision.slot),
            schedule_identity=tracked.schedule.identity,
            slot_time=decision.slot,
            state=decision.state,
            state_reason=decision.reason,
            **run_policy(spec),
            parameters={**(spec.get("parameters") or {}), **tracked.schedule.parameters},
        )


def _preparable(tracked: Tracked) -> bool:
    """May the run of this schedule's next slot be made before the slot? (module docstring)"""
    concurrency = tracked.deployment.spec.get("concurrency") or {}
    return (not tracked.paused and not tracked.deployment.paused
            and concurrency.get("onLimit", "enqueue") == "enqueue")


def _pause_reason(tracked: Tracked) -> str:
    return "deployment paused" if tracked.deployment.paused else "schedule paused"


def _skip_over_limit(decisions: list[SlotDecision], busy: int, limit: int) -> list[SlotDecision]:
    result = []
    for decision in decisions:
        if decision.state == SCHEDULED and busy >= limit:
            decision = SlotDecision(decision.slot, "Skipped", f"deployment concurrency {limit} reached (onLimit: skip)")
        elif decision.state == SCHEDULED:
            busy += 1
        result.append(decision)
    return result


def _next_after(schedule: Schedule, cursor: datetime) -> datetime | None:
    upcoming = next_slots(schedule, cursor, 1)
    return upcoming[0].astimezone(timezone.utc) if upcoming else None


def seconds_until(when: datetime | None, now: datetime, cap: float) -> float:
    """How long the loop may sleep before ``when`` (never negative, never past ``cap``)."""
    if when is None:
        return cap
    return max(0.0, min(cap, (when - now) / timedelta(seconds=1)))
