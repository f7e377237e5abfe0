"""Pydantic models of every request and response body: the OpenAPI contract.

Handlers build plain dicts with ``api.shapes`` (the same JSON the CLI
prints) and declare these models as their ``response_model``, so FastAPI
checks each response against the model and ``/openapi.json`` describes
exactly what is sent. Field names are camelCase on the wire (the aliases);
``next_cursor`` keeps the snake_case name the paging contract uses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from orchestra.store import STATES

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
StateName = Literal[STATES]  # type: ignore[valid-type]  # the store's states, one definition


class Wire(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# -- errors -------------------------------------------------------------------------


class Problem(BaseModel):
    """Every error except invalid input: what went wrong, in words."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: the request part ('body', 'query', 'path'), then the field.")
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """Invalid input (422): one entry per wrong field, the same shape FastAPI uses."""

    detail: list[FieldProblem]


# -- runs ---------------------------------------------------------------------------


class RunOut(Wire):
    id: str
    deployment: str
    pool: str
    queue: str
    state: StateName
    state_reason: str
    trigger: str
    scheduled_time: Timestamp
    slot_time: Timestamp | None
    start_time: Timestamp | None
    end_time: Timestamp | None
    attempt: int
    max_attempts: int
    exit_code: int | None
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    worker: str | None


class RunEventOut(Wire):
    time: Timestamp
    from_state: str | None = Field(alias="from")
    to: str
    reason: str
    attempt: int


class RunDetailOut(RunOut):
    job: Any = Field(description="The rendered job (null until a worker rendered it).")
    variables_patch: Any = Field(description="RFC 6902 patch of the job variables against the pool's defaults.")
    events: list[RunEventOut]


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null on the last.")


class RunCreate(Wire):
    """A manual run: parameters over the deployment's defaults, job variables over its own."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)


class LogPage(Wire):
    run_id: str
    offset: int
    next_offset: int = Field(description="Pass as ?offset= to read on.")
    text: str
    eof: bool = Field(description="True when nothing more is in the log file right now.")
    state: str = Field(description="The run's state: once terminal and at eof, the log is complete.")


class RunStateEvent(Wire):
    """The data of one server-sent event of ``GET /api/v1/events`` (documentation only)."""

    id: int
    run_id: str
    deployment: str
    from_state: str | None = Field(alias="from")
    to: str
    reason: str
    time: Timestamp
    attempt: int


# -- resources ----------------------------------------------------------------------


class DiagnosticOut(BaseModel):
    file: str
    line: int
    column: int
    resource: str | None
    path: str | None
    message: str
    hint: str | None = None
    severity: str = "error"


class ScheduleNextRuns(BaseModel):
    schedule: str = Field(description="The schedule's identity: its name, or its canonical timing.")
    description: str
    timezone: str
    active: bool
    paused: bool = Field(default=False, description="Paused at runtime (orchestra pause schedule); no runs while so.")
    times: list[Timestamp] = Field(description="The next slots, in the schedule's time zone (empty if inactive "
                                   "or paused).")


class ResourceOut(Wire):
    kind: Literal["WorkPool", "WorkQueue", "Deployment"]
    name: str
    pool: str | None = Field(description="Queues and deployments: their pool; null for a pool.")
    queue: str | None = Field(description="Deployments: their queue; null otherwise.")
    paused: bool = Field(description="Effective: the runtime override if set, else the spec's.")
    labels: dict[str, str]
    source: str | None = Field(description="file:line of the defining document; null if API-managed.")
    manager: str = Field(description="'specs' (from files) or 'api'.")
    generation: int
    spec: dict[str, Any]
    spec_errors: list[DiagnosticOut] = Field(
        description="Errors that keep this resource at its last good state (its file or itself is invalid).")
    next_runs: list[ScheduleNextRuns] = Field(description="Deployments: the next slots of each schedule.")


class UpcomingRun(Wire):
    time: Timestamp = Field(description="In the schedule's time zone.")
    utc: Timestamp
    schedule: str
    description: str


class UpcomingOut(Wire):
    deployment: str
    paused: bool
    runs: list[UpcomingRun]


# -- plan ---------------------------------------------------------------------------


class FieldChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    op: str
    path: str
    from_value: Any = Field(default=None, alias="from")
    to: Any = None


class PlanScheduleRuns(BaseModel):
    schedule: str
    timezone: str
    times: list[Timestamp]


class ChangeOut(Wire):
    action: Literal["create", "update", "delete"]
    kind: str
    name: str
    source: str | None
    diff: list[FieldChangeOut]
    next_runs: list[PlanScheduleRuns]
    notes: list[str]


class ResourceRef(BaseModel):
    kind: str
    name: str


class PlanOut(BaseModel):
    """The daemon's spec directory against the store; ``valid: false`` carries the errors."""

    valid: bool
    changes: list[ChangeOut] = Field(default_factory=list)
    summary: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    errors: list[DiagnosticOut] = Field(default_factory=list)
    api_managed: list[ResourceRef] = Field(default_factory=list, alias="apiManaged",
                                           description="API-managed resources not in the specs: kept, never pruned.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    loopSecondsAgo: float | None = Field(
        None, description="Seconds since the daemon's loop last came round; null while it starts or stops.")


# -- API-managed resources, export, schedule pause ----------------------------------


class ResourceMetadataIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(description="Lower-case letters, digits and '-' (at most 63).")
    labels: dict[str, str] | None = None
    description: str | None = None


class ResourceDocumentIn(Wire):
    """A WorkQueue or Deployment document, as in a spec file; apiVersion and kind may be left out.
    ``spec`` is checked exactly as a spec file's is (see docs/spec-reference.md)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)
    api_version: str | None = Field(default=None, description="orchestra/v1 if given.")
    kind: str | None = Field(default=None, description="Must match the address if given.")
    metadata: ResourceMetadataIn
    spec: dict[str, Any]


class ScheduleIn(BaseModel):
    """One item of a deployment's ``spec.schedules``: ``cron`` or ``interval``, and the rest optional."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    cron: str | None = None
    interval: str | int | float | None = None  # int before float: 90 stays 90
    anchor: str | None = None
    timezone: str | None = None
    parameters: dict[str, Any] | None = None
    active: bool | None = None


class ExportDocument(Wire):
    api_version: str
    kind: str
    metadata: dict[str, Any]
    spec: dict[str, Any]


class SchedulePauseOut(BaseModel):
    deployment: str
    schedule: str = Field(description="The schedule's identity: its name, or its canonical timing.")
    index: int = Field(description="Its position in spec.schedules.")
    paused: bool


class UnreachableOut(BaseModel):
    """A pool whose runner (a Docker engine) a daemon or worker cannot reach: its runs wait."""

    pool: str
    error: str = Field(description="What the last start in the pool met, with what to check.")
    since: str = Field(description="When the first start that could not reach the pool's runner was made.")
