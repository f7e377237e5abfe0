"""Pure decisions of the worker: what an ended attempt means, and the words for it.

No I/O and no clock: ``LocalWorker`` and ``recovery`` pass in what they
observed (the run's state, the exit code, why the worker stopped the job) and
get back the state to record and a plain-words reason. Kept apart so the rules
("a cancel wins over the exit code", "a timeout is a failure and is retried")
are in one place and tested as a table.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any, Final

from orchestra.durations import format_duration, parse_duration
from orchestra.store import CANCELLED, CANCELLING, COMPLETED, CRASHED, FAILED, Run

# Why the worker itself stopped a job (``Supervised.stop``).
CANCEL: Final = "cancel"
TIMEOUT: Final = "timeout"
SHUTDOWN: Final = "shutdown"

CANCELLED_BY_REQUEST: Final = "cancelled by request"
SHUTTING_DOWN: Final = "daemon shutting down"
DEFAULT_GRACE: Final = 10.0  # seconds, like `docker stop` and the process runner


def exit_reason(code: int) -> str:
    """``exit code 3``, or ``killed by SIGKILL`` for a negative (signal) code."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def seconds_text(seconds: float) -> str:
    """``30s``, ``1h30m``: a duration the way specs write it."""
    return format_duration(timedelta(seconds=seconds))


def finish_outcome(state: str, code: int, stop: str | None, timeout_seconds: float | None) -> tuple[str, str]:
    """The state and reason to record for an attempt that ended with ``code``.

    A cancel in flight wins over the exit code (the user asked for the run to
    stop; how the job reacted to SIGTERM is not the news). A job the worker
    stopped for its timeout failed, whatever it exited with.
    """
    if state == CANCELLING:
        return CANCELLED, SHUTTING_DOWN if stop == SHUTDOWN else CANCELLED_BY_REQUEST
    if stop == TIMEOUT:
        limit = seconds_text(timeout_seconds) if timeout_seconds else "its timeout"
        return FAILED, f"timed out after {limit}"
    if code == 0:
        return COMPLETED, exit_reason(0)
    return FAILED, exit_reason(code)


def retries_left(run: Run, outcome: str) -> bool:
    """Failed and Crashed attempts are retried while attempts remain; nothing else is."""
    return outcome in (FAILED, CRASHED) and run.attempt < run.max_attempts


def retry_reason(reason: str, next_attempt: int, max_attempts: int, delay: float) -> str:
    """``exit code 1; retry 2/3 in 30s`` (or ``... now`` without a delay)."""
    when = f"in {seconds_text(delay)}" if delay > 0 else "now"
    return f"{reason}; retry {next_attempt}/{max_attempts} {when}"


def grace_seconds(job: Any) -> float:
    """The job's ``terminationGracePeriod`` in seconds; the default when absent or unreadable
    (the runner validated the job already, so unreadable means a runner without the field)."""
    value = job.get("terminationGracePeriod") if isinstance(job, dict) else None
    if value is None:
        return DEFAULT_GRACE
    try:
        return parse_duration(value).total_seconds()
    except (ValueError, TypeError):
        return DEFAULT_GRACE


def label(run: Run) -> str:
    """How log lines name a run: the id prefix ``orchestra get runs`` shows, and its deployment."""
    return f"run {run.id[:12]} {run.deployment}"
