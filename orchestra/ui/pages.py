"""What each page shows, gathered from the store: one query per list, never one per row.

Functions of the store, the settings and a time, returning plain dicts for
the templates (``templates/*.html``); the routes (``ui.routes``) only parse
the request, call one of these and render. Lists are paged; counts and the
last run of each listed deployment come from the store's aggregate reads
(``store.stats``), so a page costs the same with 10 or 10,000 deployments.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from orchestra.api.routes_logs import decode_page
from orchestra.api.routes_resources import spec_errors
from orchestra.api.routes_runs import decode_cursor, encode_cursor
from orchestra.api.settings import ApiSettings
from orchestra.api.shapes import masked_run_json, shown_spec, source_text
from orchestra.api.views import errors_of, next_runs, upcoming
from orchestra.diagnostics import SpecError
from orchestra.errors import OrchestraError
from orchestra.reconcile import presence
from orchestra.reconcile.apply import plan_specs
from orchestra.reconcile.jobs import prepare_job
from orchestra.reconcile.operations import paused_schedules
from orchestra.runners.logs import read_log
from orchestra.store import ACTIVE, CRASHED, FAILED, PUT_BACK, READY, STATES, TERMINAL, Run, Store, StoredResource

PAGE = 50
CHART_HOURS = 24
LATE_AFTER = timedelta(minutes=1)
LOG_TAIL = 128 * 1024  # bytes of a run's output rendered with the page; the rest follows live
WAITING_SHOWN = 25
CHART_TTL = 10.0  # seconds the overview's chart may lag


@dataclass(frozen=True)
class RunFilters:
    state: str | None = None
    deployment: str | None = None
    pool: str | None = None
    since: datetime | None = None
    until: datetime | None = None


# -- overview -------------------------------------------------------------------------


class ChartCache:
    """The overview's chart, recomputed at most every ``seconds``.

    Counting a day of runs by hour and state reads every run created that
    day: cheap for thousands, a few hundred milliseconds for 100,000 a day.
    An hourly chart that lags a few seconds is still right, so every viewer
    within the window shares one count.
    """

    def __init__(self, seconds: float = CHART_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._value: tuple[float, datetime, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def get(self, store: Store, now: datetime) -> dict[str, Any]:
        with self._lock:
            hour = now.replace(minute=0, second=0, microsecond=0)
            cached = self._value
            if cached is None or cached[1] != hour or self.clock() - cached[0] > self.seconds:
                cached = self._value = (self.clock(), hour, run_chart(store, now))
            return cached[2]


def overview(store: Store, now: datetime, chart: ChartCache | None = None) -> dict[str, Any]:
    return {
        "chart": chart.get(store, now) if chart is not None else run_chart(store, now),
        "late": store.late_runs(now - LATE_AFTER, limit=10),
        "failing": store.list_runs(state={FAILED, CRASHED}, since=now - timedelta(hours=24), limit=10),
        "pools": pool_loads(store, now),
        "spec_errors": spec_errors(store),
        "daemons": presence.daemons(store, now),
    }


def run_chart(store: Store, now: datetime) -> dict[str, Any]:
    """Runs created per hour over the last 24 h, stacked by state, scaled for an SVG."""
    first = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=CHART_HOURS - 1)
    hours = [first + timedelta(hours=i) for i in range(CHART_HOURS)]
    counts: dict[datetime, dict[str, int]] = {hour: {} for hour in hours}
    for item in store.runs_per_hour(first):
        if item.hour in counts:
            counts[item.hour][item.state] = item.count
    states = [s for s in STATES if any(s in c for c in counts.values())]
    peak = max([sum(c.values()) for c in counts.values()] + [1])
    return {"hours": [{"hour": h, "counts": counts[h], "total": sum(counts[h].values())} for h in hours],
            "states": states, "peak": peak, "total": sum(sum(c.values()) for c in counts.values())}


def pool_loads(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Each pool and its queues with active runs against their limits, and due runs waiting."""
    loads = {(q.pool, q.queue): q for q in store.queue_load(now)}
    queues_by_pool: dict[str, list[StoredResource]] = defaultdict(list)
    for queue in store.list_resources("WorkQueue"):
        queues_by_pool[queue.spec.get("pool", "")].append(queue)
    result = []
    for pool in store.list_resources("WorkPool"):
        queues = _queue_rows(pool.name, queues_by_pool[pool.name], loads)
        result.append({"pool": pool, "type": pool.spec.get("type"), "limit": pool.spec.get("concurrencyLimit"),
                       "active": sum(q["active"] for q in queues), "due": sum(q["due"] for q in queues),
                       "later": sum(q["later"] for q in queues), "queues": queues})
    return result


def _queue_rows(pool: str, declared: list[StoredResource], loads: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    rows = [{"name": q.name, "priority": q.spec.get("priority"), "limit": q.spec.get("concurrencyLimit"),
             "paused": q.paused, "resource": q} for q in declared]
    if "default" not in {q.name for q in declared}:
        rows.append({"name": "default", "priority": None, "limit": None, "paused": False, "resource": None})
    for row in rows:
        load = loads.get((pool, row["name"]))
        row.update(active=load.active if load else 0, due=load.due if load else 0, later=load.later if load else 0)
    return sorted(rows, key=lambda r: (r["priority"] is None, r["priority"] or 0, r["name"]))


# -- deployments ----------------------------------------------------------------------


def deployments(store: Store, now: datetime, *, name: str | None, pool: str | None, labels: dict[str, str],
                page: int) -> dict[str, Any]:
    found = store.page_resources("Deployment", name=name, pool=pool, labels=labels, offset=(page - 1) * PAGE,
                                 limit=PAGE)
    names = [d.name for d in found.items]
    last, paused = store.latest_runs(names, now), store.paused_schedules(names) if names else set()
    rows = [{"resource": d, "last": last.get(d.name), "labels": d.metadata.get("labels") or {},
             "schedules": [{**s, "paused": (d.name, s["schedule"]) in paused} for s in next_runs(d.spec, now, count=2)]}
            for d in found.items]
    return {"rows": rows, "total": found.total, "page": page, "pages": max(1, -(-found.total // PAGE)),
            "first": (page - 1) * PAGE + 1, "last_index": (page - 1) * PAGE + len(rows),
            "pools": [p.name for p in store.list_resources("WorkPool")]}


def deployment(store: Store, now: datetime, name: str, cursor: str | None) -> dict[str, Any]:
    resource = store.get_resource("Deployment", name)
    history = run_page(store, RunFilters(deployment=name), cursor, size=20)
    paused = paused_schedules(store, name)
    schedules = [{**s, "paused": s["schedule"] in paused} for s in next_runs(resource.spec, now, count=3)]
    zones = {s["schedule"]: s["timezone"] for s in schedules}
    coming = [{**u, "zone": zones.get(u["schedule"], "UTC")} for u in upcoming(resource.spec, now, 10)]
    return {"resource": resource, "source": source_text(resource),
            "yaml": _resource_yaml(store, resource), "job": _rendered_job(store, name),
            "schedules": schedules, "upcoming": coming,
            "spec_errors": errors_of(resource, spec_errors(store)), **history}


def _resource_yaml(store: Store, resource: StoredResource) -> str:
    """The spec as YAML, secret defaults hidden (``***``) as the API shows them."""
    pool = store.get_resources("WorkPool", [resource.spec.get("pool", "")]).get(resource.spec.get("pool", ""))
    document = {"apiVersion": "orchestra/v1", "kind": resource.kind, "metadata": resource.metadata,
                "spec": shown_spec(resource, pool)}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _rendered_job(store: Store, name: str) -> dict[str, Any]:
    """The job a run with the default parameters would get, or why it cannot be rendered."""
    try:
        prepared = prepare_job(store, name)
    except OrchestraError as exc:  # a page shows what it can; the reason is the news
        return {"error": str(exc)}
    return {"job": yaml.safe_dump(prepared.rendered.job, sort_keys=False, allow_unicode=True)}


# -- runs -----------------------------------------------------------------------------


def run_page(store: Store, filters: RunFilters, cursor: str | None, size: int = PAGE) -> dict[str, Any]:
    """One page of runs, newest first, and the cursor of the next page (None on the last)."""
    found = store.list_runs(deployment=filters.deployment, state=filters.state, pool=filters.pool,
                            since=filters.since, until=filters.until, limit=size + 1,
                            before_cursor=decode_cursor(cursor))
    page = found[:size]
    more = len(found) > size
    return {"runs": page, "next_cursor": encode_cursor(page[-1].cursor) if more else None}


def run_detail(store: Store, settings: ApiSettings, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    log = _log_tail(settings, run)
    pool = store.get_resources("WorkPool", [run.pool]).get(run.pool)
    shown = masked_run_json(store, run)  # secret parameters and job variables as ***
    return {"run": run, "events": store.events(run.id), "log": log, "pool": pool,
            "parameters": shown["parameters"], "job_variables": shown["jobVariables"],
            "job": yaml.safe_dump(run.job, sort_keys=False, allow_unicode=True) if run.job is not None else None,
            "waiting": _why_waiting(store, run, settings.clock()), "cancellable": run.state not in TERMINAL}


def _log_tail(settings: ApiSettings, run: Run) -> dict[str, Any]:
    """The end of the run's output so far, and the offset from which the page follows it."""
    path = settings.log_dir / f"{run.id}.log"
    size = path.stat().st_size if path.exists() else 0
    start = max(0, size - LOG_TAIL)
    data, _ = read_log(path, start, size - start)
    text, used = decode_page(data, final=False)
    return {"text": text, "offset": start + used, "truncated": start > 0}


def _why_waiting(store: Store, run: Run, now: datetime) -> str | None:
    """For a due Scheduled run: the dispatcher's reason it has not started."""
    if run.state != "Scheduled" or run.scheduled_time > now:
        return None
    for waiting, reason in store.explain_waiting(run.pool, now, limit=1000):
        if waiting.id == run.id:
            return _ready(run, _unserved(store, run.pool, now)) if reason == READY else reason
    return None


def _ready(run: Run, ready: str) -> str:
    """A ready run that a worker claimed and put back says why its start did not happen
    (the worker short of resources, its Docker engine away): ready alone would hide it."""
    if not run.state_reason.startswith(PUT_BACK):
        return ready
    why = run.state_reason.removeprefix(PUT_BACK).removesuffix("; the run waits")
    return f"{ready}; its last start did not happen: {why}"


def _unserved(store: Store, pool: str, now: datetime) -> str:
    """The reason of a run the next claim would take: a worker's, unless nobody serves
    its pool (no daemon runs, or none with that pool, and no remote worker claims from it)."""
    if presence.serving(pool, presence.daemons(store, now), presence.workers(store, now)):
        return READY
    return (f"ready; but no running daemon or online worker serves pool {pool!r} "
            f"(see orchestra status)")


# -- pools ----------------------------------------------------------------------------


def pools(store: Store, now: datetime, only: str | None = None, shown: int = WAITING_SHOWN) -> dict[str, Any]:
    """Pools with their load and the due runs in dispatch order, each with why it waits."""
    loads = pool_loads(store, now)
    if only is not None:
        store.get_resource("WorkPool", only)  # 404 for an unknown pool
        loads = [p for p in loads if p["pool"].name == only]
    for item in loads:
        name = item["pool"].name
        waiting = store.explain_waiting(name, now, limit=shown)
        ready = _unserved(store, name, now) if any(reason == READY for _, reason in waiting) else READY
        item["waiting"] = [(run, _ready(run, ready) if reason == READY else reason) for run, reason in waiting]
        item["more"] = item["due"] > len(item["waiting"])
    return {"pools": loads, "only": only, "active_states": sorted(ACTIVE)}


# -- plan -----------------------------------------------------------------------------


def plan(store: Store, settings: ApiSettings) -> dict[str, Any]:
    if not settings.spec_paths:
        return {"watched": [], "valid": True, "changes": [], "summary": {}, "notes": [], "errors": []}
    watched = [str(p) for p in settings.spec_paths]
    try:
        result = plan_specs(store, list(settings.spec_paths), prune=settings.prune, now=settings.clock())
    except SpecError as exc:
        return {"watched": watched, "valid": False, "errors": [d.to_json() for d in exc.diagnostics],
                "changes": [], "summary": {}, "notes": []}
    data = result.plan.to_json()
    return {"watched": watched, "valid": True, "errors": [], **data}
