"""Recording what happened to a run: store transitions, log lines, notes in the run's log.

Every state change the worker makes goes through ``move`` (one compare-and-set
``Store.transition`` and one readable INFO line on ``orchestra.worker``) or
``finish`` (which also decides between a retry and a final state). A
``Conflict`` is not an error here: it means someone else (a cancel, another
daemon's recovery) changed the run first, and their change stands.
``note`` appends an ``[orchestra]`` line to the run's log file, so that
``orchestra logs`` tells the whole story of an attempt, not only its output.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestra.errors import Conflict, NotFound
from orchestra.store import SCHEDULED, Run, Store
from orchestra.workers.outcomes import label, retries_left, retry_reason

log = logging.getLogger("orchestra.worker")


def move(store: Store, run: Run, to_state: str, reason: str, *,
         expect: Collection[str] | None = None, **fields: Any) -> Run | None:
    """Transition ``run`` if it is still in the state we saw (or in ``expect``);
    None when someone else changed it first."""
    try:
        moved = store.transition(run.id, to_state, reason, expect=expect or {run.state}, **fields)
    except (Conflict, NotFound) as err:
        log.debug("%s: not moved to %s: %s", label(run), to_state, err)
        return None
    log.info("%s: %s -> %s (%s)", label(run), run.state, to_state, reason)
    return moved


def finish(store: Store, run: Run, outcome: str, reason: str, now: datetime,
           exit_code: int | None = None, *, retry: bool = True) -> Run | None:
    """Record the end of an attempt: back to Scheduled for a retry when one is owed,
    else ``outcome`` with its exit code and end time."""
    if retry and retries_left(run, outcome):
        delay = run.retry_delay_seconds
        # attempt and due time are set here, not left to the store: from Pending
        # (a launch error) the store would not count the attempt, and its clock is not ``now``.
        return move(store, run, SCHEDULED, retry_reason(reason, run.attempt + 1, run.max_attempts, delay),
                    attempt=run.attempt + 1, scheduled_time=now + timedelta(seconds=delay))
    return move(store, run, outcome, reason, end_time=now, exit_code=exit_code)


def note(path: Path, text: str) -> None:
    """Append ``[orchestra] text`` to a run's log; a log that cannot be written is
    not a reason to lose the run's state change, so failures are only logged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            # start on a line of our own even if the job's last line had no newline
            f.seek(0, 2)
            size = f.tell()
            if size:
                f.seek(size - 1)
                prefix = b"" if f.read(1) == b"\n" else b"\n"
            else:
                prefix = b""
            f.write(prefix + f"[orchestra] {text}\n".encode())
    except OSError as err:
        log.warning("cannot write to log %s: %s", path, err)
