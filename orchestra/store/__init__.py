"""Persistence for resources and runs: SQLite by default, PostgreSQL to scale.

The only package that imports SQLAlchemy (Core only, never the ORM). Callers
get plain frozen dataclasses and the ``Store`` methods; nothing above this
package sees a row, a session or a dialect. Start at ``store.py``.
"""

from orchestra.store.dispatch import PUT_BACK, READY
from orchestra.store.leadership import Leadership
from orchestra.store.migrations import LATEST_VERSION
from orchestra.store.models import (
    ACTIVE,
    CANCELLED,
    CANCELLING,
    COMPLETED,
    CRASHED,
    FAILED,
    MISSED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    STATES,
    TERMINAL,
    TRANSITIONS,
    FinishedAndClaimed,
    NewRun,
    ResourceWrite,
    Run,
    RunEvent,
    StoredResource,
    can_transition,
    effective_paused,
    evolve,
)
from orchestra.store.store import Store, open_store
from orchestra.store.transitions import TransitionRequest, TransitionResult

__all__ = [
    "ACTIVE", "CANCELLED", "CANCELLING", "COMPLETED", "CRASHED", "FAILED", "LATEST_VERSION",
    "MISSED", "PENDING", "PUT_BACK", "READY", "RUNNING", "SCHEDULED", "SKIPPED", "STATES", "TERMINAL",
    "TRANSITIONS", "FinishedAndClaimed", "Leadership", "NewRun", "ResourceWrite", "Run", "RunEvent", "Store", "StoredResource",
    "TransitionRequest", "TransitionResult",
    "can_transition", "effective_paused", "evolve", "open_store",
]
