"""Runs, resources and reports as JSON between a remote worker and the daemon.

One module for both ends: the API's worker routes (``api.routes_workers``)
encode with ``run_to_wire``/``resource_to_wire`` and decode reports with
``report_to_request``; the worker's ``RemoteStore`` does the opposite. Keeping
both directions here means the two sides cannot drift apart.

Times in reports travel as *offsets in seconds from the sender's now*
(``startTimeOffset: -0.2``), and the server turns them into times on its own
clock. Two machines' clocks then never have to agree: a run retried "in 5
seconds" is due 5 seconds after the server heard of it, whatever the worker's
clock says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from orchestra.store import Run, StoredResource, TransitionRequest

RUN_TIMES = frozenset({"slot_time", "lease_expires_at", "scheduled_time", "created_at", "start_time", "end_time"})
RESOURCE_TIMES = frozenset({"created_at", "updated_at"})
# Report fields that are times, as offsets on the wire.
REPORT_TIMES = {"start_time": "startTimeOffset", "end_time": "endTimeOffset", "scheduled_time": "scheduledTimeOffset"}
# Report fields sent as they are.
REPORT_VALUES = {"exit_code": "exitCode", "runner_ident": "runnerIdent", "job": "job",
                 "variables_patch": "variablesPatch"}
# What a worker may set besides the state: never its own lease or name (the server owns those).
REPORTABLE = frozenset(REPORT_TIMES) | frozenset(REPORT_VALUES) | {"attempt"}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def run_to_wire(run: Run) -> dict[str, Any]:
    """Every stored field of ``run``, camelCase, times as ISO 8601."""
    return {camel(f.name): _time_out(getattr(run, f.name)) if f.name in RUN_TIMES else getattr(run, f.name)
            for f in dataclasses.fields(Run)}


def run_from_wire(data: Mapping[str, Any]) -> Run:
    values = {f.name: data.get(camel(f.name)) for f in dataclasses.fields(Run)}
    for name in RUN_TIMES:
        values[name] = _time_in(values[name])
    return Run(**values)


def resource_to_wire(resource: StoredResource) -> dict[str, Any]:
    return {camel(f.name): _time_out(getattr(resource, f.name)) if f.name in RESOURCE_TIMES
            else getattr(resource, f.name) for f in dataclasses.fields(StoredResource)}


def resource_from_wire(data: Mapping[str, Any]) -> StoredResource:
    values = {f.name: data.get(camel(f.name)) for f in dataclasses.fields(StoredResource)}
    for name in RESOURCE_TIMES:
        values[name] = _time_in(values[name])
    return StoredResource(**values)


def request_to_report(request: TransitionRequest, attempt: int, now: datetime) -> dict[str, Any]:
    """A worker's transition as the report the server checks against its lease.

    ``attempt`` is the attempt the worker holds (the lease is worker + attempt);
    ``now`` is the worker's clock, against which times become offsets.
    """
    unknown = set(request.fields) - REPORTABLE
    if unknown:
        raise TypeError(f"a remote worker cannot report {sorted(unknown)}")
    report: dict[str, Any] = {
        "runId": request.run_id, "attempt": attempt, "toState": request.to_state, "reason": request.reason,
        "expect": sorted(request.expect) if request.expect is not None else None,
    }
    if "attempt" in request.fields:
        report["nextAttempt"] = request.fields["attempt"]
    for name, key in REPORT_TIMES.items():
        if request.fields.get(name) is not None:
            report[key] = (request.fields[name] - now) / timedelta(seconds=1)
    for name, key in REPORT_VALUES.items():
        if name in request.fields:
            report[key] = request.fields[name]
    return report


def report_to_request(report: Mapping[str, Any], worker: str, now: datetime) -> TransitionRequest:
    """The compare-and-set the server applies for a report: only while ``worker``
    still holds the run under the reported attempt (its lease was not revoked)."""
    fields: dict[str, Any] = {}
    if report.get("nextAttempt") is not None:
        fields["attempt"] = report["nextAttempt"]
    for name, key in REPORT_TIMES.items():
        if report.get(key) is not None:
            fields[name] = now + timedelta(seconds=report[key])
    for name, key in REPORT_VALUES.items():
        if key in report:
            fields[name] = report[key]
    expect = report.get("expect")
    return TransitionRequest(report["runId"], report["toState"], report["reason"],
                             frozenset(expect) if expect is not None else None,
                             {"worker": worker, "attempt": report["attempt"]}, fields)


def _time_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time_in(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
