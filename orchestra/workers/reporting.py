"""Recording what happened to a run: store transitions, log lines, notes in the run's log.

Every state change the worker makes is a compare-and-set ``TransitionRequest``
built here: ``move_request`` (a plain move) or ``finish_request`` (which also
decides between a retry and a final state). ``apply_moves`` sends any number
of them to the store in one transaction and logs one readable INFO line on
``orchestra.worker`` per change; ``move`` and ``finish`` are the batch of
one. A ``Conflict`` is not an error here: it means someone else (a cancel,
another daemon's recovery) changed the run first, and their change stands;
the caller gets None for that run.
``note`` appends an ``[orchestra]`` line to the run's log file, so that
``orchestra logs`` tells the whole story of an attempt, not only its output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestra.runners.base import is_shortage
from orchestra.store import SCHEDULED, Run, Store, TransitionRequest
from orchestra.workers.outcomes import label, retries_left, retry_reason

log = logging.getLogger("orchestra.worker")

Move = tuple[Run, TransitionRequest]  # the run as the worker saw it, and what should happen to it


def move_request(run: Run, to_state: str, reason: str, *, expect: Collection[str] | None = None,
                 match: Mapping[str, Any] | None = None, **fields: Any) -> Move:
    """Move ``run`` if it is still in the state we saw (or in ``expect``) and,
    with ``match``, still has those field values."""
    return run, TransitionRequest(run.id, to_state, reason, frozenset(expect or {run.state}), match or {}, fields)


def finish_request(run: Run, outcome: str, reason: str, now: datetime, exit_code: int | None = None, *,
                   retry: bool = True, match: Mapping[str, Any] | None = None) -> Move:
    """The end of an attempt: back to Scheduled for a retry when one is owed,
    else ``outcome`` with its exit code and end time."""
    if retry and retries_left(run, outcome):
        delay = run.retry_delay_seconds
        # attempt and due time are set here, not left to the store: from Pending
        # (a launch error) the store would not count the attempt, and its clock is not ``now``.
        return move_request(run, SCHEDULED, retry_reason(reason, run.attempt + 1, run.max_attempts, delay),
                            match=match, attempt=run.attempt + 1, scheduled_time=now + timedelta(seconds=delay))
    return move_request(run, outcome, reason, match=match, end_time=now, exit_code=exit_code)


def apply_moves(store: Store, moves: Sequence[Move]) -> list[Run | None]:
    """Apply every move in one store transaction; per move the run after it, or
    None when someone else changed the run first.

    The runs are the worker's own as it last saw them, so a store that can
    (``Store.transition_seen``; a remote worker's client cannot) skips reading them again.
    """
    seen = getattr(store, "transition_seen", None)
    if seen is not None:
        return report_moves(moves, seen(moves))
    return report_moves(moves, store.transition_many([request for _, request in moves]))


def report_moves(moves: Sequence[Move], results: Sequence[object]) -> list[Run | None]:
    """Log the moves the store made (``results``: its answers, in order); per move
    the run after it, or None when someone else changed the run first."""
    moved: list[Run | None] = []
    for (run, request), result in zip(moves, results, strict=True):
        if isinstance(result, Run):
            if log.isEnabledFor(logging.INFO):  # a burst records hundreds of moves: skip label() unless shown
                log.info("%s: %s -> %s (%s)", label(run), run.state, request.to_state, request.reason)
            moved.append(result)
        else:
            log.debug("%s: not moved to %s: %s", label(run), request.to_state, result)
            moved.append(None)
    return moved


def move(store: Store, run: Run, to_state: str, reason: str, *,
         expect: Collection[str] | None = None, **fields: Any) -> Run | None:
    """``move_request`` applied at once; None when someone else changed the run first."""
    return apply_moves(store, [move_request(run, to_state, reason, expect=expect, **fields)])[0]


def finish(store: Store, run: Run, outcome: str, reason: str, now: datetime,
           exit_code: int | None = None, *, retry: bool = True) -> Run | None:
    """``finish_request`` applied at once."""
    return apply_moves(store, [finish_request(run, outcome, reason, now, exit_code, retry=retry)])[0]


def note(path: Path, text: str) -> None:
    """Append ``[orchestra] text`` to a run's log; a log that cannot be written is
    not a reason to lose the run's state change, so failures are only logged.

    Plain ``os`` calls rather than a file object: the worker writes two notes
    per run, and a burst of short runs made the buffered file's setup show.
    """
    try:
        fd = _open_log(path)
    except OSError as err:  # out of descriptors: the worker says so once (``workers.capacity``), not per note
        log.log(logging.DEBUG if is_shortage(err) else logging.WARNING, "cannot write to log %s: %s", path, err)
        return
    try:
        # start on a line of our own even if the job's last line had no newline
        size = os.fstat(fd).st_size
        prefix = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, prefix + f"[orchestra] {text}\n".encode())
    except OSError as err:
        log.warning("cannot write to log %s: %s", path, err)
    finally:
        os.close(fd)


def _open_log(path: Path) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:  # the first note of the first run: make the log directory
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)
