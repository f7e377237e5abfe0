"""Routes for remote workers: claim, heartbeat, report, ship logs, and the reads a worker needs.

``orchestra worker`` (``remote.worker``) runs the daemon's own ``LocalWorker``
on another machine, over ``remote.store_client.RemoteStore``, which calls
these routes instead of the store. Each route is one store call:

* ``POST /workers/{worker}/claim``: ``Store.claim_runs``, the claim path of
  the daemon's in-process workers (limits, pauses, priorities, one claimer
  per run); the claimed runs come back under a lease of ``leaseSeconds``;
* ``POST /workers/{worker}/heartbeat``: ``Store.renew_lease``; the ids left
  out of ``kept`` are runs the worker lost (recovered after its lease ran
  out, or changed elsewhere): it must kill their jobs;
* ``POST /workers/{worker}/transitions``: ``Store.transition_many``, each
  report a compare-and-set *under the lease*: it applies only while the run
  is still this worker's, at the reported attempt. A late report of a
  revoked lease is refused (409) and changes nothing;
* ``POST /runs/{run_id}/logs``: appends a chunk of the worker's log file to
  the run's log, idempotently by offset (``remote.logsink``); only the
  run's worker may, or the worker that ran the last attempt until another
  one claims the run (the last lines of an attempt follow its report).

Any holder of the token may call these routes under any worker name; what a
name protects is the runs: a report moves only a run its worker holds.

A remote worker needs the deployments and pools as stored, unmasked, to
render its jobs: that is what the bearer token grants.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from orchestra.api.errors import BAD_BODY, CONFLICT, NOT_FOUND
from orchestra.api.schemas import StateName, Timestamp, UnreachableOut
from orchestra.api.settings import ApiSettings
from orchestra.errors import Conflict, NotFound, StoreError
from orchestra.reconcile import presence
from orchestra.reconcile.presence import WorkerRoster
from orchestra.remote.logsink import append_chunk, has_stream
from orchestra.remote.wire import report_to_request, resource_to_wire, run_to_wire
from orchestra.store import ACTIVE, SCHEDULED, Run, Store, TransitionRequest

WORKER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
RUN_ID_PATTERN = r"^[0-9a-f]{6,64}$"
MAX_CLAIM = 500
MAX_BATCH = 10_000  # run ids per heartbeat or lookup, reports per transition batch
MAX_LEASE = 86_400.0
MAX_OFFSET_SECONDS = 100_000_000.0  # report times: about three years either way
MAX_CHUNK = 4 * 1024 * 1024  # bytes of log per request

WorkerName = Annotated[str, Path(pattern=WORKER_PATTERN, description="The worker's name (orchestra worker prints it).")]
RunIdText = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
Seconds = Annotated[float, Field(ge=-MAX_OFFSET_SECONDS, le=MAX_OFFSET_SECONDS)]
LeaseSeconds = Annotated[float, Field(ge=1, le=MAX_LEASE, description="How long the lease lasts without a heartbeat.")]
ResourceKind = Literal["WorkPool", "WorkQueue", "Deployment"]
StatesQuery = Annotated[list[StateName], Query(description="Repeat; default: the active states.")]
IdsQuery = Annotated[list[RunIdText], Query(max_length=500, description="Repeat for several runs.")]
NamesQuery = Annotated[list[str], Query(max_length=1000, description="Only these; default: all.")]


class _Body(BaseModel):
    """camelCase on the wire; unknown fields refused (a typo must not be ignored), and no
    value coerced to its field's type (``true`` is not a number of seconds)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        """Pydantic would take ``true`` as 1: no field here is a boolean, so refuse it."""
        if isinstance(value, bool):
            raise ValueError("true or false is not allowed here")
        return value


class ClaimIn(_Body):
    pool: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    queues: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100, description="Only runs of these queues; null: every queue of the pool.")
    max: int = Field(ge=1, le=MAX_CLAIM, description="Claim at most this many runs.")
    lease_seconds: LeaseSeconds
    limit: int | None = Field(default=None, ge=1, le=100_000,
                              description="The worker's own limit: claim only while it holds fewer active runs.")


class HeartbeatIn(_Body):
    run_ids: list[RunIdText] = Field(max_length=MAX_BATCH)
    lease_seconds: LeaseSeconds


class ReportIn(_Body):
    """One state change a worker reports, under its lease (the run's worker and ``attempt``).
    Times are offsets in seconds from the worker's now; the server applies them to its clock."""

    run_id: RunIdText
    attempt: int = Field(ge=1, le=1_000_000, description="The attempt the worker holds.")
    to_state: StateName
    reason: Annotated[str, StringConstraints(max_length=2000)]
    expect: list[StateName] | None = Field(default=None, description="States the run must be in; null: any.")
    next_attempt: int | None = Field(default=None, ge=2, le=1_000_001, description="A retry: attempt + 1.")
    start_time_offset: Seconds | None = None
    end_time_offset: Seconds | None = None
    scheduled_time_offset: Seconds | None = None
    exit_code: int | None = Field(default=None, ge=-(2**31), lt=2**31)
    runner_ident: Annotated[str, StringConstraints(max_length=500)] | None = None
    job: dict[str, Any] | None = None
    variables_patch: list[dict[str, Any]] | None = None


class TransitionsIn(_Body):
    reports: list[ReportIn] = Field(min_length=1, max_length=MAX_BATCH)


class WorkerRunOut(BaseModel):
    """A run with every stored field (what a worker needs to run and report it)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    id: str
    deployment: str
    pool: str
    queue: str
    idempotency_key: str | None
    schedule_identity: str | None
    slot_time: Timestamp | None
    trigger: str
    state: StateName
    state_reason: str
    attempt: int
    max_attempts: int
    retry_delay_seconds: float
    timeout_seconds: float | None
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    variables_patch: Any
    job: Any
    worker: str | None
    lease_expires_at: Timestamp | None
    runner_ident: str | None
    exit_code: int | None
    scheduled_time: Timestamp
    created_at: Timestamp
    start_time: Timestamp | None
    end_time: Timestamp | None


class ClaimOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    runs: list[WorkerRunOut]
    next_due_in_seconds: float | None = Field(description="When the pool's next Scheduled run is due, from now.")


class RunsOut(BaseModel):
    runs: list[WorkerRunOut]


class HeartbeatOut(BaseModel):
    kept: list[str] = Field(description="Runs whose lease was extended; any other one was lost: kill its job.")


class ReportResult(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    run_id: str
    status: Literal[200, 404, 409]
    detail: str | None = Field(description="Why the report was refused; null when it applied.")
    run: WorkerRunOut | None = Field(description="The run after the change; null when refused.")


class TransitionsOut(BaseModel):
    results: list[ReportResult]


class TransitionsRefused(BaseModel):
    """No report of the batch applied: 409 (404 if no run exists); ``results`` says why, report by report."""

    detail: str
    results: list[ReportResult]


class DueOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    due_in_seconds: float | None = Field(description="From now (negative: overdue); null: nothing is Scheduled.")


class StoredResourceOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    kind: str
    name: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    source_file: str | None
    source_line: int | None
    content_hash: str
    generation: int
    manager: str
    paused_override: bool | None
    created_at: Timestamp
    updated_at: Timestamp


class ResourcesOut(BaseModel):
    marker: int = Field(description="Changes whenever any resource does; compare to know when to read again.")
    resources: list[StoredResourceOut]


class LogChunkIn(_Body):
    run_id: RunIdText
    attempt: int | None = Field(None, ge=1, le=1_000_001, description="The attempt whose output this is; "
                                "each attempt a worker runs is a stream of its own, its offsets from 0.")
    offset: int = Field(ge=0, le=2**53, description="Where the chunk starts in the attempt's output.")
    data: Annotated[str, StringConstraints(max_length=2 * MAX_CHUNK)] = Field(description="The bytes, base64.")


class LogChunksIn(_Body):
    chunks: list[LogChunkIn] = Field(min_length=1, max_length=1000)


class LogChunkResult(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    run_id: str
    status: Literal[200, 400, 404, 409] = Field(description="400: data is not base64; 404: no such run; "
                                                           "409: the run's log is not this worker's to write.")
    next_offset: int | None = Field(description="How much of this worker's log the server holds; null if refused.")
    detail: str | None


class LogChunksOut(BaseModel):
    results: list[LogChunkResult]


class LogAppended(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    next_offset: int = Field(description="How much of this worker's log the server holds: send on from here.")


REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": TransitionsRefused, "description": "No report applied (a lease was revoked, a run changed)."},
    404: {"model": TransitionsRefused, "description": "No report applied: none of the runs exists."},
}
OCTET_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


class WorkerOut(BaseModel):
    worker: str
    pools: list[str] = Field(description="The pools it claimed from.")
    seenAt: str = Field(description="Its last request (written at most every 10 s).")
    unreachable: list[UnreachableOut] = Field([], description=(
        "Pools whose runner (a Docker engine) it cannot reach, as it last said: their runs wait."))
    state: Literal["online", "offline"] = Field(description="`offline`: no request for 30 s.")


class WorkerStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unreachable: list[UnreachableOut] = Field(description="Every pool whose runner it cannot reach now (none: []).")


class WorkersOut(BaseModel):
    workers: list[WorkerOut] = Field(description="Every remote worker seen in the last day, the one seen last first.")


def workers_router(store: Store, settings: ApiSettings) -> APIRouter:
    roster = WorkerRoster(store, settings.clock)

    def note_worker(request: Request) -> None:
        """Every request of a worker says it is alive (``orchestra status``, the pools page)."""
        worker = request.path_params.get("worker")
        if worker:
            with contextlib.suppress(StoreError):  # the request itself will say what the store said
                roster.seen(worker)

    router = APIRouter(prefix="/api/v1", tags=["workers"], dependencies=[Depends(note_worker)])

    @router.get("/workers", response_model=WorkersOut, summary="The remote workers: online, or gone quiet")
    def list_workers() -> dict[str, Any]:
        return {"workers": presence.workers(store, settings.clock())}

    @router.post("/workers/{worker}/status", status_code=204, responses=BAD_BODY,
                 summary="Say which of its pools wait for their runner (orchestra status shows it)")
    def report_status(worker: WorkerName, body: WorkerStatusIn) -> Response:
        roster.report(worker, [item.model_dump() for item in body.unreachable])
        return Response(status_code=204)

    _add_lease_routes(router, store, settings, roster)
    _add_read_routes(router, store, settings)
    _add_log_route(router, store, settings)
    return router


def _add_lease_routes(router: APIRouter, store: Store, settings: ApiSettings, roster: WorkerRoster) -> None:
    @router.post("/workers/{worker}/claim", response_model=ClaimOut, responses=BAD_BODY,
                 summary="Claim due runs of a pool under a lease")
    def claim(worker: WorkerName, body: ClaimIn) -> dict[str, Any]:
        with contextlib.suppress(StoreError):  # the claim itself will say what the store said
            roster.seen(worker, body.pool)
        wanted = body.max
        if body.limit is not None:
            wanted = min(wanted, body.limit - len(store.active_runs(worker=worker)))
        claimed = store.claim_runs(body.pool, now=settings.clock(), worker=worker, max_count=wanted,
                                   lease_seconds=body.lease_seconds, queues=body.queues)  # none if wanted <= 0
        return {"runs": [run_to_wire(run) for run in claimed], "nextDueInSeconds": _due_in(store, body.pool, settings)}

    @router.post("/workers/{worker}/heartbeat", response_model=HeartbeatOut, responses=BAD_BODY,
                 summary="Extend the leases of runs a worker still runs")
    def heartbeat(worker: WorkerName, body: HeartbeatIn) -> dict[str, Any]:
        until = settings.clock() + timedelta(seconds=body.lease_seconds)
        return {"kept": sorted(store.renew_lease(worker, body.run_ids, until))}

    @router.post("/workers/{worker}/transitions", response_model=TransitionsOut, responses={**BAD_BODY, **REFUSED},
                 summary="Report state changes of runs under the worker's lease (409 if none applied)")
    def transitions(worker: WorkerName, body: TransitionsIn) -> Any:
        now = settings.clock()
        checked = [_refused_retry(report) or _as_request(report, worker, now) for report in body.reports]
        applied = iter(store.transition_many([r for r in checked if not isinstance(r, Conflict)]))
        outcomes = [r if isinstance(r, Conflict) else next(applied) for r in checked]
        answers = [_result(report.run_id, outcome) for report, outcome in zip(body.reports, outcomes, strict=True)]
        if any(isinstance(outcome, Run) for outcome in outcomes):
            return {"results": answers}
        status = 404 if all(isinstance(outcome, NotFound) for outcome in outcomes) else 409
        detail = "; ".join(f"{a['runId']}: {a['detail']}" for a in answers)
        return JSONResponse({"detail": detail, "results": answers}, status_code=status)


def _add_read_routes(router: APIRouter, store: Store, settings: ApiSettings) -> None:
    @router.get("/workers/{worker}/runs", response_model=RunsOut, summary="A worker's runs in the given states")
    def worker_runs(worker: WorkerName,
                    state: StatesQuery = [],  # noqa: B006 - FastAPI copies defaults per request
                    ) -> dict[str, Any]:
        return {"runs": [run_to_wire(run) for run in store.runs_in_states(set(state) or ACTIVE, worker=worker)]}

    @router.get("/workers/{worker}/run-records", response_model=RunsOut,
                summary="Runs by id, with every stored field (any worker's)")
    def run_records(worker: WorkerName,
                    id: IdsQuery = [],  # noqa: A002, B006 - the wire name; FastAPI copies defaults
                    ) -> dict[str, Any]:
        found = store.get_runs(id) if id else {}
        return {"runs": [run_to_wire(found[run_id]) for run_id in dict.fromkeys(id) if run_id in found]}

    @router.get("/workers/{worker}/next-due", response_model=DueOut, summary="When a pool's next run falls due")
    def next_due(worker: WorkerName, pool: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
        return {"dueInSeconds": _due_in(store, pool, settings)}

    @router.get("/workers/{worker}/resources", response_model=ResourcesOut,
                summary="Pools, queues or deployments as stored (what a worker renders jobs from)")
    def resources(worker: WorkerName, kind: ResourceKind,
                  name: NamesQuery = [],  # noqa: B006 - FastAPI copies defaults per request
                  ) -> dict[str, Any]:
        marker = store.resource_marker()  # before the read: a change in between is seen next time
        found = list(store.get_resources(kind, name).values()) if name else store.list_resources(kind)
        return {"marker": marker, "resources": [resource_to_wire(resource) for resource in found]}


def _add_log_route(router: APIRouter, store: Store, settings: ApiSettings) -> None:
    @router.post("/workers/{worker}/logs", response_model=LogChunksOut, responses=BAD_BODY,
                 summary="Append chunks of a worker's logs of several runs at once (idempotent by offset)")
    def append_logs(worker: WorkerName, body: LogChunksIn) -> dict[str, Any]:
        runs = store.get_runs({chunk.run_id for chunk in body.chunks})
        return {"results": [_append(settings, runs.get(chunk.run_id), chunk, worker) for chunk in body.chunks]}

    @router.post("/runs/{run_id}/logs", response_model=LogAppended, responses={**NOT_FOUND, **CONFLICT},
                 openapi_extra=OCTET_BODY,
                 summary="Append a chunk of a remote worker's log of a run (idempotent by offset)")
    async def append_log(run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)], request: Request,
                         worker: Annotated[str, Query(pattern=WORKER_PATTERN)],
                         offset: Annotated[int, Query(ge=0, le=2**53, description="Where the chunk starts in "
                                                      "the attempt's output.")],
                         attempt: Annotated[int | None, Query(ge=1, le=1_000_001, description="The attempt whose "
                                                              "output this is (a stream of its own).")] = None,
                         ) -> dict[str, Any]:
        data = await request.body()
        if len(data) > MAX_CHUNK:
            raise Conflict(f"a log chunk may be at most {MAX_CHUNK} bytes; send smaller ones")
        run = await to_thread.run_sync(store.get_run, run_id)
        refusal = _log_refusal(settings, run, worker)
        if refusal is not None:
            raise Conflict(refusal)
        written = await to_thread.run_sync(append_chunk, settings.log_dir, run.id, worker, offset, data, attempt)
        return {"nextOffset": written}


def _log_refusal(settings: ApiSettings, run: Run, worker: str) -> str | None:
    """Why ``worker`` may not write the run's log: only the run's worker may, or the worker of the
    last attempt until another one claims the run (the last lines follow the attempt's report)."""
    if run.worker == worker or (run.worker is None and has_stream(settings.log_dir, run.id, worker)):
        return None
    return f"run {run.id} is not held by worker {worker}: its log is not this worker's to write"


def _append(settings: ApiSettings, run: Run | None, chunk: LogChunkIn, worker: str) -> dict[str, Any]:
    refused: dict[str, Any] = {"runId": chunk.run_id, "nextOffset": None}
    if run is None:
        return {**refused, "status": 404, "detail": f"run {chunk.run_id!r} not found"}
    if (refusal := _log_refusal(settings, run, worker)) is not None:
        return {**refused, "status": 409, "detail": refusal}
    try:
        data = base64.b64decode(chunk.data, validate=True)
    except binascii.Error:
        return {**refused, "status": 400, "detail": "data is not base64"}
    written = append_chunk(settings.log_dir, run.id, worker, chunk.offset, data, chunk.attempt)
    return {"runId": chunk.run_id, "status": 200, "nextOffset": written, "detail": None}


def _as_request(report: ReportIn, worker: str, now: datetime) -> TransitionRequest:
    return report_to_request(report.model_dump(by_alias=True, exclude_unset=True), worker, now)


def _refused_retry(report: ReportIn) -> Conflict | None:
    """A retry moves to the next attempt, never elsewhere: refuse a report that would skip some."""
    if report.next_attempt is not None and (report.next_attempt != report.attempt + 1 or report.to_state != SCHEDULED):
        return Conflict(f"a retry of attempt {report.attempt} is attempt {report.attempt + 1}, Scheduled")
    return None


def _result(run_id: str, outcome: Run | Conflict | NotFound) -> dict[str, Any]:
    if isinstance(outcome, Run):
        return {"runId": run_id, "status": 200, "detail": None, "run": run_to_wire(outcome)}
    return {"runId": run_id, "status": 404 if isinstance(outcome, NotFound) else 409, "detail": str(outcome),
            "run": None}


def _due_in(store: Store, pool: str, settings: ApiSettings) -> float | None:
    due = store.next_due_time(pool)
    return None if due is None else (due - settings.clock()).total_seconds()


