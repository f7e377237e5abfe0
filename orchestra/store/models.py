"""Values the store takes and returns, and the run state machine.

Plain frozen dataclasses, so callers above the store never see SQLAlchemy
rows. The state machine is a table (``TRANSITIONS``) rather than code spread
over call sites: ``transition`` enforces it in one place and the tests walk
every pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from orchestra.errors import Conflict, NotFound

SCHEDULED: Final = "Scheduled"
PENDING: Final = "Pending"
RUNNING: Final = "Running"
CANCELLING: Final = "Cancelling"
COMPLETED: Final = "Completed"
FAILED: Final = "Failed"
CRASHED: Final = "Crashed"
CANCELLED: Final = "Cancelled"
SKIPPED: Final = "Skipped"
MISSED: Final = "Missed"

STATES: Final = (
    SCHEDULED, PENDING, RUNNING, CANCELLING,
    COMPLETED, FAILED, CRASHED, CANCELLED, SKIPPED, MISSED,
)
TERMINAL: Final = frozenset({COMPLETED, FAILED, CRASHED, CANCELLED, SKIPPED, MISSED})
ACTIVE: Final = frozenset({PENDING, RUNNING, CANCELLING})

# from-state -> the states it may move to. Terminal states map to nothing.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    SCHEDULED: frozenset({PENDING, CANCELLED, SKIPPED, MISSED}),
    # -> Scheduled: the worker released the run, or it is retried.
    PENDING: frozenset({RUNNING, SCHEDULED, CANCELLING, CANCELLED, CRASHED, FAILED}),
    # -> Scheduled: a retry (attempt + 1, due after the retry delay).
    RUNNING: frozenset({COMPLETED, FAILED, CRASHED, CANCELLING, SCHEDULED}),
    CANCELLING: frozenset({CANCELLED, COMPLETED, FAILED, CRASHED}),
    **{state: frozenset() for state in TERMINAL},
}

# States a run may be created in: due work, or a slot recorded as not run.
INITIAL_STATES: Final = frozenset({SCHEDULED, SKIPPED, MISSED, CANCELLED})


def can_transition(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


def sources_of(to_state: str) -> frozenset[str]:
    """The states from which ``to_state`` may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if to_state in targets)


MANAGERS: Final = frozenset({"specs", "api"})


@dataclass(frozen=True)
class ResourceWrite:
    """One resource as ``apply_resources`` should store it."""

    kind: str
    name: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    source_file: str | None
    source_line: int | None
    content_hash: str
    manager: str = "specs"


@dataclass(frozen=True)
class StoredResource:
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
    created_at: datetime
    updated_at: datetime

    @property
    def paused(self) -> bool:
        """Runtime override if set, else the spec's ``paused`` (default false)."""
        return effective_paused(self.spec, self.paused_override)


def effective_paused(spec: Mapping[str, Any], override: bool | None) -> bool:
    return override if override is not None else bool(spec.get("paused", False))


@dataclass(frozen=True)
class NewRun:
    """A run to create. ``slot_time`` defaults to ``scheduled_time`` for scheduled runs."""

    deployment: str
    pool: str
    scheduled_time: datetime
    queue: str = "default"
    trigger: str = "manual"
    idempotency_key: str | None = None
    schedule_identity: str | None = None
    slot_time: datetime | None = None
    state: str = SCHEDULED
    state_reason: str = ""
    max_attempts: int = 1
    retry_delay_seconds: float = 0.0
    timeout_seconds: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    job_variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A run as stored. ``scheduled_time`` is when it is due: for a retry, the
    retry's due time. ``slot_time`` is the schedule slot it was made for and
    never changes (``None`` for manual runs)."""

    id: str
    deployment: str
    pool: str
    queue: str
    idempotency_key: str | None
    schedule_identity: str | None
    slot_time: datetime | None
    trigger: str
    state: str
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
    lease_expires_at: datetime | None
    runner_ident: str | None
    exit_code: int | None
    scheduled_time: datetime
    created_at: datetime
    start_time: datetime | None
    end_time: datetime | None

    @property
    def cursor(self) -> str:
        """Pass as ``list_runs(before_cursor=...)`` to get the page after this run."""
        return f"{self.created_at.isoformat()}/{self.id}"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


RUN_FIELDS: Final = frozenset(Run.__dataclass_fields__)


def evolve(run: Run, values: Mapping[str, Any]) -> Run:
    """``dataclasses.replace(run, **values)`` without running ``__init__`` again.

    Claims and transitions change a few fields of every run they touch, and
    ``replace`` re-passes all twenty-six: this copies the instance's fields and
    sets the changed ones, several times faster. Unknown names are refused as
    ``replace`` refuses them.
    """
    unknown = values.keys() - RUN_FIELDS
    if unknown:
        raise TypeError(f"Run has no field(s) {sorted(unknown)}")
    copy = object.__new__(Run)
    copy.__dict__.update(run.__dict__)
    copy.__dict__.update(values)
    return copy


@dataclass(frozen=True)
class RunEvent:
    id: int
    run_id: str
    time: datetime
    from_state: str | None
    to_state: str
    reason: str
    attempt: int


@dataclass(frozen=True)
class FinishedAndClaimed:
    """What ``Store.finish_and_claim`` did in its one transaction, in its order:
    the ended attempts recorded, the runs claimed, and what the worker reads
    next on every pass, read after both."""

    finished: list[Run | Conflict | NotFound]  # per request: the run after it, or why it did not apply
    claimed: list[Run]  # made Pending under the worker, in dispatch order
    deployments: dict[str, StoredResource | None]  # the claimed runs' deployments (None: gone)
    resource_revision: int | None  # the resource revision the deployments were read under
    # When a run of the pool is next due: at or before the claim's ``now`` if runs
    # were left due (held back by a limit, or beyond ``max_count``); None if none is scheduled.
    next_due: datetime | None
    cancelling: list[Run]  # the worker's runs someone asked to cancel
    # A rehearsal only (``Store.rehearse_claim``): the ids of the runs due by its time
    # (up to ``claim.PRELOAD_LIMIT``), in dispatch time order, the claimed ones among them.
    coming: list[str] = field(default_factory=list)
