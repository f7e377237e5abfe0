"""The runner protocol: how a worker launches a rendered job and controls it.

Workers (``orchestra.workers``) render a run's job from its pool's template and
hand the resulting dict to a ``Runner``. The runner starts the job, returns a
``RunHandle`` to wait on, cancel or kill it, and writes the job's output to the
run's log file. Workers depend on these protocols only, so a process runner, a
Docker runner and test doubles are interchangeable.

``RunHandle.ident`` is persisted on the run: after a daemon crash, the new
daemon passes it to ``Runner.reap_orphan`` to clean up what the dead one left.

Two optional capabilities let a worker drain a burst of short jobs faster,
and runners without them work unchanged: a runner whose ``start`` is
thread-safe says how many may run at once (``concurrent_starts``, see
``start_concurrency``), and a handle that can call back when its job is done
(``NotifyingHandle``) spares the worker a thread blocked in ``wait`` per job.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from orchestra.durations import parse_duration
from orchestra.errors import OrchestraError


class LaunchError(OrchestraError):
    """The job cannot start (missing executable or directory, permission denied).

    Terminal for this attempt: retrying the same rendered job on the same
    machine fails the same way, so the worker records the message as the
    run's state reason instead of retrying blindly.
    """


class Unreachable(LaunchError):
    """What runs the jobs cannot be reached (a Docker engine that is down or
    restarting), and the start's request never got to it: nothing was made,
    and nothing is wrong with the job.

    Unlike other ``LaunchError``s it does not end the attempt: the worker puts
    the run back in the queue, its attempt unspent, and leaves the runner's
    pools alone for a while (``workers.outages``). A failure the engine may
    have seen part of (a connection reset mid-request) is not this: it might
    have made a container, so it stays a plain ``LaunchError``.

    ``probe``, when the runner has one, asks whether it can be reached again
    without starting anything (``Runner.probe``): the pool's outage tries that
    instead of claiming a run to find out, so the runs' histories do not fill
    with claims put back.
    """

    def __init__(self, message: str, probe: Callable[[], None] | None = None) -> None:
        super().__init__(message)
        self.probe = probe


# Errors of a start that say the daemon or its machine is out of something (descriptors,
# processes, memory), not that anything is wrong with the job.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def is_shortage(err: BaseException) -> TypeGuard[OSError]:
    """Did a start fail for want of resources (too many open files or processes, no
    memory)? Such a failure is the worker's, not the job's: the run waits for room
    instead of failing, and runners raise it as the ``OSError`` it is, not as a
    ``LaunchError``."""
    return isinstance(err, OSError) and err.errno in SHORTAGE_ERRNOS


class RunHandle(Protocol):
    """A started job. Thread-safe: a worker waits while an API call cancels."""

    @property
    def ident(self) -> str:
        """Opaque, persistable name of what was started (see ``Runner.reap_orphan``)."""
        ...

    def poll(self) -> int | None:
        """The exit code if the job has finished, else None; never blocks."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the job finishes (exit code) or ``timeout`` passes (None)."""
        ...

    def terminate(self, grace: float | None = None) -> int | None:
        """Ask the job to stop, force it after ``grace`` seconds; return its exit code.

        ``grace`` defaults to the job's ``terminationGracePeriod``.
        """
        ...

    def kill(self) -> None:
        """Stop the job now, without a grace period; does not wait."""
        ...


class NotifyingHandle(Protocol):
    """A handle that calls back when its job is done (optional, see the module docstring)."""

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, as soon as ``poll()`` returns the exit code
        (at once, in the caller's thread, if it already does). It runs in the
        runner's thread, so it must return quickly and never block."""
        ...


def start_concurrency(runner: object) -> int:
    """How many jobs a worker may start at once through ``runner``: its
    ``concurrent_starts`` if it declares its ``start`` thread-safe, else one."""
    value = getattr(runner, "concurrent_starts", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


@dataclass(frozen=True)
class Unrecorded:
    """A job found by its run and attempt whose start no store records (``find_unrecorded``)."""

    ident: str
    started: datetime | None  # when it started, if the runner can tell
    grace: float | None = None  # seconds between SIGTERM and SIGKILL its job asked for, if known


class Runner(Protocol):
    """Launches rendered jobs of one pool type."""

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, *, deployment: str | None = None,
              pool: str | None = None, attempt: int | None = None) -> RunHandle:
        """Start ``job``; its output goes to ``log_path``. Raises ``LaunchError`` for what is
        wrong with the job, ``OSError`` for what is wrong here (see ``is_shortage``).
        ``deployment``, ``pool`` and ``attempt`` are the run's, for a runner that labels what
        it makes (so that a later daemon can find a job whose start was never recorded)."""
        ...

    def reap_orphan(self, ident: str) -> bool:
        """Kill what a dead daemon left running under ``ident``; True if anything was.

        Must verify that ``ident`` still names the very thing that was started
        (not a recycled PID), so a stale ident never harms an unrelated process.
        """
        ...

    def validate_job(self, job: dict[str, Any]) -> list[str]:
        """Problems with the shape of a rendered job, each as ``"path: what is wrong"``."""
        ...

    # Optional, for jobs that outlive their daemon: ``adopt(self, ident, log_path, run_id)
    # -> RunHandle | None`` follows again a job a dead daemon recorded; ``find_unrecorded(self,
    # run_id, attempt) -> Unrecorded | None`` finds the job of an attempt whose start the dead
    # daemon never recorded (so that it is adopted too, not run a second time), and
    # ``reap_unrecorded(self, run_id) -> bool`` kills whatever else such a run left running.
    # Optional: ``probe(self) -> None``, raising ``Unreachable`` while what runs the jobs cannot
    # be reached and returning once it answers; called from a thread of its own during an
    # outage (``workers.outages``), so it may block, but should give up within seconds.
    # Optional: ``warm(self) -> None``, called by a worker shortly before runs fall due
    # (``LocalWorker._rehearse``), to set up what the first start would otherwise pay for.
    # Optional, together: ``hold(self, run_id, job) -> held | None``, called shortly before
    # the run falls due to make its job ahead without running it, and ``start_held(self,
    # held, log_path) -> RunHandle``, its start (``OSError``: start it the ordinary way);
    # a held job the worker does not start is ended by its ``drop()`` (``workers.holding``).
    # Optional, together: ``attend(self) -> None``, called by the worker's thread at each pass,
    # to do there, without blocking, what a thread of the runner does for running jobs (their
    # output, their ends), and ``rest(self) -> None``, called before that thread sleeps or
    # blocks, to hand the work back: a runner's thread waking for every job that ends
    # competes with a busy loop for the interpreter lock.


def check_grace(grace: Any) -> list[str]:
    """Problems of a job's ``terminationGracePeriod`` (shared by every runner's ``validate_job``)."""
    if grace is None:
        return []
    try:
        parse_duration(grace)  # which also refuses zero and negative lengths
    except (ValueError, TypeError, OrchestraError) as err:
        return [f"terminationGracePeriod: {err}"]
    return []


def check_log_max(limit: Any) -> list[str]:
    """Problems of a job's ``logMaxBytes``."""
    if limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0):
        return []
    return [f"logMaxBytes: must be a positive integer, got {limit!r}"]


def check_env(env: Any) -> list[str]:
    """Problems of a job's ``env`` mapping (shared by every runner's ``validate_job``)."""
    if env is None:
        return []
    if not isinstance(env, dict):
        return [f"env: must be an object of strings, got {json_type(env)}"]
    problems = []
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            problems.append(f"env: {name!r} is not a valid variable name")
        else:
            problems.append(check_string(f"env.{name}", value, hint=" (quote the value in YAML)"))
    return [p for p in problems if p]


def check_string(path: str, value: Any, hint: str = "") -> str:
    if not isinstance(value, str):
        return f"{path}: must be a string, got {json_type(value)}{hint}"
    return f"{path}: contains a NUL character" if "\0" in value else ""


def json_type(value: Any) -> str:
    """Name a Python value by its JSON/YAML type, the words a spec author knows."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
