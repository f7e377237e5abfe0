"""The process runner: a rendered job becomes a local process group.

Workers call ``ProcessRunner.start`` with a rendered ``process`` job; the
daemon calls ``reap_orphan`` on start for runs a dead daemon left behind.

Each job runs in its own session (so its own process group), without a shell,
stdin from /dev/null, stdout and stderr merged into one pipe. One shared
"pump" thread multiplexes every run's pipe and exit notification (a pidfd,
or polling ``waitid`` where pidfds are unavailable), so 200 concurrent runs
cost one thread, not 400. The pump is the only reaper of the children: when
a job's main process exits it kills the rest of its group *before* reaping
the leader, because the unreaped leader still holds the PID, so the group
ID cannot be recycled in between. Then it drains the pipe to EOF, bounded in
time, since a process that escaped the group may still hold the pipe open.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import selectors
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.durations import parse_duration
from orchestra.runners.base import (
    LaunchError,
    check_env,
    check_grace,
    check_log_max,
    check_string,
    is_shortage,
    json_type,
)
from orchestra.runners.leftovers import Leftovers, boot_ticks
from orchestra.runners.logs import DEFAULT_LOG_MAX_BYTES, BoundedLogWriter
from orchestra.runners.spawn import Child, HeldChild, hold, prepare, spawn

__all__ = ["PROCESS_JOB_FIELDS", "ProcessHandle", "ProcessRunner", "validate_process_job"]

log = logging.getLogger(__name__)

PROCESS_JOB_FIELDS = ("command", "env", "workingDir", "terminationGracePeriod", "logMaxBytes")
DEFAULT_GRACE = 10.0  # seconds, as `docker stop`
DRAIN_GRACE = 2.0  # seconds to wait for EOF once the job's group is dead
_POLL_INTERVAL = 0.05  # exit polling where pidfds are unavailable
_READ_SIZE = 64 * 1024


class _Tracked:
    """Everything the pump and the handle share about one started process.

    ``lock`` makes "the leader is not reaped yet" and "signal its group" one
    step, so a signal never reaches a recycled process group; it also makes
    "read the leader's start time" and "reap it" exclusive, so the start time
    (part of the handle's ident) is read while the PID is still ours.
    """

    def __init__(self, child: Child, writer: BoundedLogWriter, run_id: str, start_time: int | None = None) -> None:
        self.child = child
        self.pid = child.pid
        self.run_id = run_id
        self.end_ticks = 0  # when its group was killed, in ticks after boot (see ``leftovers``)
        self.writer = writer
        self.pipe_fd = child.stdout
        os.set_blocking(self.pipe_fd, False)
        self.pidfd: int | None = None
        self.lock = threading.Lock()
        self.reaped = False
        self.eof = False
        self.drain_deadline = 0.0
        self.returncode: int | None = None
        self.done = threading.Event()
        self._start_time = start_time  # known already for a held job (read while it was held)
        self._callbacks: list[Callable[[], None]] | None = []  # None once done

    def start_time(self) -> int | None:
        """The leader's start time (clock ticks after boot), read on first use; None
        while ``/proc`` cannot be read (the daemon is out of descriptors), asked again next time.

        Not read at launch: right after ``exec`` the kernel makes the read
        wait for the new program to be set up, which in a burst of short jobs
        cost the launching thread as much as the launch itself. By the time
        anyone asks (the worker recording the run as Running, or the pump
        about to reap), it is quick. Never reaped before it is read, so it is
        at worst a zombie's.
        """
        with self.lock:
            return self._read_start_time()

    def _read_start_time(self) -> int | None:
        if self._start_time is None:
            self._start_time = _start_time(self.pid)
        return self._start_time

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole group unless the job already ended."""
        with self.lock:
            if self.reaped:
                return False
            return _killpg(self.pid, sig)

    def reap(self, drain_grace: float) -> None:
        """Kill what is left of the group, then collect the leader's exit code."""
        with self.lock:
            self._read_start_time()  # the last moment it can be read
            _killpg(self.pid, signal.SIGKILL)
            self.end_ticks = boot_ticks()
            self.returncode = self.child.wait()
            self.reaped = True
        self.drain_deadline = time.monotonic() + drain_grace

    def add_done_callback(self, callback: Callable[[], None]) -> bool:
        """Have the pump call ``callback()`` once the job is done; False (and no
        call) if it is done already."""
        with self.lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def finish(self) -> None:
        """Mark the job done (exit code and log complete) and tell who asked to know."""
        self.done.set()  # first: a callback added from now on and called at once sees the exit code
        with self.lock:
            callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing listener must not stop the pump
                log.exception("process %d: done callback failed", self.pid)

    def exited(self) -> bool:
        """Has the leader exited? Peeks without reaping (``WNOWAIT``)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.pid, flags) is not None
        except ChildProcessError:
            return True


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user (setuid); the others got it
        return True
    return True


_IDLE_EXIT = 5.0  # seconds an idle pump thread waits for the next job before it ends
ATTEND_SWEEP_LATE = 4.0  # seconds past due after which the worker's thread looks for leftovers itself
PARK_LIMIT = 0.05  # seconds the pump thread stays away after the worker's thread last attended


class _Pump:
    """Reads every run's pipe into its log and notices exits, for all runs at once.

    Jobs are handed over through ``add`` (a list plus a wake-up pipe). The
    work is done by the pump's own thread, or by the worker's thread while that
    one is busy: in a burst of short jobs the pump's thread woke for every job
    that ended and took the interpreter lock from the worker's loop each time,
    which then waited for it (measured: a fifth of a burst's drain). So the
    worker's loop does the work itself at each pass (``attend``), and the
    thread stays parked until the loop goes to sleep (``rest``) or has not
    attended for ``PARK_LIMIT`` (a loop blocked in something else: the work
    never waits longer than that). Whoever does the work holds ``_working``,
    so selector registrations, ``_jobs`` and the jobs' ends are touched by one
    thread at a time. The thread ends after ``_IDLE_EXIT`` seconds without a
    job and starts again on the next ``add``.
    """

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards ``_incoming``, ``_thread`` and ``_idle_since``
        self._working = threading.Lock()
        self._incoming: list[tuple[_Tracked, float]] = []
        self._jobs: dict[_Tracked, float] = {}
        self._thread: threading.Thread | None = None
        self._idle_since: float | None = None
        self._attended_at: float | None = None  # monotonic time of the last ``attend``; None: resting
        self._resume = threading.Event()
        self._leftovers = Leftovers()  # what escaped ended jobs' groups, looked for from the thread

    def add(self, job: _Tracked, drain_grace: float) -> None:
        with self._lock:
            first = not self._incoming  # later ones ride on the wake-up already sent
            self._incoming.append((job, drain_grace))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="orchestra-process-pump", daemon=True)
                self._thread.start()
        if first and self._parked_for() <= 0:  # a parked thread takes them in when it wakes (or ``attend`` does)
            self._poke()

    def attend(self) -> None:
        """Do, in the calling thread, what the pump's thread would: take in the jobs
        handed over, copy output, reap the jobs that ended; never blocks. Until
        ``rest``, the thread stays parked (at most ``PARK_LIMIT`` after the last call)."""
        now = time.monotonic()
        attended, self._attended_at = self._attended_at, now
        if attended is None or now - attended >= PARK_LIMIT:
            self._poke()  # the thread may be blocked in select: it comes out and parks
        if not self._working.acquire(blocking=False):
            return  # the thread is at it: what it leaves, the next pass takes
        try:
            self._register(self._take_incoming())
            self._work(thread=False)
            self._sweep_leftovers(late_by=ATTEND_SWEEP_LATE)  # a loop that never rests still has them ended
        finally:
            self._working.release()

    def rest(self) -> None:
        """The attending thread goes to sleep: the pump's thread takes the work back at once."""
        if self._attended_at is None:
            return
        self._attended_at = None
        self._resume.set()
        self._poke()  # a thread blocked in select recomputes its timeout (drain deadlines set meanwhile)

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        while True:
            parked = self._parked_for()
            if parked > 0:
                self._resume.wait(parked)
                self._resume.clear()
                continue
            with self._working:
                if not self._adopt_incoming():
                    return
                timeout = self._timeout()
            ready = self._sel.select(timeout)  # outside the lock: ``attend`` never waits for it
            with self._working:
                if ready:
                    self._work()
                else:
                    self._check_clock()
                self._sweep_leftovers()

    def _parked_for(self) -> float:
        """How much longer the thread stays away (0: not parked)."""
        attended = self._attended_at
        return 0.0 if attended is None else attended + PARK_LIMIT - time.monotonic()

    def _work(self, *, thread: bool = True) -> None:
        """Handle what is ready now (under ``_working``): what a select outside the lock
        saw may have been handled by ``attend`` meanwhile, so look again. Only the pump's
        thread drains its wake-up pipe: a wake-up drained by ``attend`` would leave the
        thread blocked in select, where it should come out and park."""
        for key, _ in self._sel.select(0):
            if key.data is not None or thread:
                self._dispatch(key.data)
        self._check_clock()

    def _take_incoming(self) -> list[tuple[_Tracked, float]]:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            return incoming

    def _adopt_incoming(self) -> bool:
        """Register new jobs; False (and the thread ends) when there is no work."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            if not incoming and not self._jobs:
                return self._still_wanted()
            self._idle_since = None
        self._register(incoming)
        return True

    def _register(self, incoming: list[tuple[_Tracked, float]]) -> None:
        for job, grace in incoming:
            self._jobs[job] = grace
            self._sel.register(job.pipe_fd, selectors.EVENT_READ, lambda j=job: self._on_output(j))
            if job.pidfd is not None:
                self._sel.register(job.pidfd, selectors.EVENT_READ, lambda j=job: self._on_exit(j))

    def _still_wanted(self) -> bool:
        """Idle: keep the thread for ``_IDLE_EXIT`` seconds (a burst of short jobs
        would otherwise start a thread per job), then end it. Called under the lock."""
        if self._leftovers.pending():
            return True
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < _IDLE_EXIT:
            return True
        self._thread = None
        self._idle_since = None
        return False

    def _dispatch(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            self._drain_wake_pipe()
            return
        try:
            callback()
        except Exception:  # a bug here must not stop every other run's log
            log.exception("process pump callback failed")

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _timeout(self) -> float | None:
        """How long select may block: until the next drain deadline or exit poll."""
        now = time.monotonic()
        leftovers = self._leftovers.due_in(now)
        waits = [] if leftovers is None else [leftovers]
        if not self._jobs and self._idle_since is not None:
            waits.append(_IDLE_EXIT - (now - self._idle_since))
        waits += [j.drain_deadline - now for j in self._jobs if j.reaped]
        if any(j.pidfd is None and not j.reaped for j in self._jobs):
            waits.append(_POLL_INTERVAL)
        return max(0.0, min(waits)) if waits else None

    def _on_output(self, job: _Tracked) -> None:
        try:
            data = os.read(job.pipe_fd, _READ_SIZE)
        except BlockingIOError:
            return
        if data:
            job.writer.write(data)
        else:
            self._close_pipe(job)

    def _on_exit(self, job: _Tracked) -> None:
        assert job.pidfd is not None
        self._sel.unregister(job.pidfd)
        os.close(job.pidfd)
        job.pidfd = None
        self._reap(job)

    def _reap(self, job: _Tracked) -> None:
        job.reap(self._jobs[job])
        self._leftovers.note(job.run_id, job.end_ticks)
        self._maybe_finish(job)

    def _sweep_leftovers(self, late_by: float = 0.0) -> None:
        """End what escaped the groups of jobs that ended (``leftovers``), once due (and
        ``late_by`` seconds more), sparing the sessions of the jobs still running."""
        due_in = self._leftovers.due_in(time.monotonic() - late_by)
        if due_in is None or due_in > 0:
            return
        live = {job.pid for job in self._jobs if not job.reaped}
        self._leftovers.sweep_if_due(time.monotonic(), live)

    def _check_clock(self) -> None:
        """Exit polling (no pidfd) and the drain deadline of escaped pipe holders."""
        now = time.monotonic()
        for job in list(self._jobs):
            if not job.reaped and job.pidfd is None and job.exited():
                self._reap(job)
            elif job.reaped and not job.eof and now >= job.drain_deadline:
                job.writer.note("output pipe still held open by a process outside the job; stopped reading")
                self._close_pipe(job)

    def _close_pipe(self, job: _Tracked) -> None:
        self._sel.unregister(job.pipe_fd)
        job.child.close_stdout()
        job.eof = True
        self._maybe_finish(job)

    def _maybe_finish(self, job: _Tracked) -> None:
        """A run is done once its leader is reaped and its output is all logged."""
        if job.reaped and job.eof:
            job.writer.close()
            del self._jobs[job]
            job.finish()


_pump_lock = threading.Lock()
_pump: _Pump | None = None


def _shared_pump() -> _Pump:
    """The process-wide pump, made on first use: importing opens no descriptors."""
    global _pump
    with _pump_lock:
        if _pump is None:
            _pump = _Pump()
        return _pump


class ProcessHandle:
    """A started process job (see ``orchestra.runners.base.RunHandle``).

    Exit codes follow ``subprocess``: negative means killed by that signal.
    The job counts as finished only when its whole group is gone and its log
    is complete, so a worker that sees an exit code can read the full log.
    """

    def __init__(self, tracked: _Tracked, grace: float) -> None:
        self._t = tracked
        self._grace = grace

    @property
    def ident(self) -> str:
        """``pid:<pid>:<start time>:<boot id>``; empty if the start time cannot be read
        (no descriptor left): a daemon recovering the run then finds the job by its
        run id instead (``reap_unrecorded``), as one whose start was never recorded."""
        start_time = self._t.start_time()
        return "" if start_time is None else _Ident(self._t.pid, start_time, _boot_id()).format()

    @property
    def pid(self) -> int:
        """The job's main process, which is also its process group and session id."""
        return self._t.pid

    def poll(self) -> int | None:
        return self._t.returncode if self._t.done.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._t.done.wait(timeout)
        return self.poll()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the job is done (from the pump thread; at once if it is).

        What a worker uses instead of a thread blocked in ``wait`` per job.
        """
        if not self._t.add_done_callback(callback):
            callback()

    def terminate(self, grace: float | None = None) -> int | None:
        """SIGTERM the group, wait ``grace`` seconds, then SIGKILL it; return the exit code."""
        self._t.signal_group(signal.SIGTERM)
        code = self.wait(self._grace if grace is None else grace)
        if code is None:
            self.kill()
            code = self.wait()
        return code

    def kill(self) -> None:
        self._t.signal_group(signal.SIGKILL)


@dataclass(frozen=True)
class HeldJob:
    """A job's process made ahead and held (``ProcessRunner.hold``), and how it was launched."""

    launch: _Launch
    child: HeldChild
    start_time: int | None  # the held process's (an ``exec`` keeps it), read ahead: None if it could not be

    def drop(self) -> None:
        self.child.drop()


@dataclass(frozen=True)
class _Launch:
    """A validated job resolved against the runner's base directory and environment."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    grace: float
    log_max_bytes: int


class ProcessRunner:
    """Runs ``process`` pool jobs as local process groups (see the module docstring).

    ``base_dir`` (the spec directory) anchors relative ``workingDir`` values.
    ``use_pidfd=False`` forces exit polling, the fallback for kernels before
    5.3; ``drain_grace`` bounds how long output is read after the job ended.
    """

    concurrent_starts = 1  # started in the worker's own thread: see ``runners.spawn``

    def __init__(self, base_dir: Path, *, use_pidfd: bool = True, drain_grace: float = DRAIN_GRACE) -> None:
        self._base_dir = Path(base_dir).resolve()
        self._use_pidfd = use_pidfd and hasattr(os, "pidfd_open")
        self._drain_grace = drain_grace
        self._base_env: dict[str, str] | None = None

    def validate_job(self, job: dict[str, Any]) -> list[str]:
        return validate_process_job(job)

    def warm(self) -> None:
        """Set up before a burst what the first start would (see ``Runner.warm``):
        the daemon's environment copied and encoded, glibc's spawn loaded, the pump made."""
        prepare(self._daemon_env())
        _shared_pump()

    def attend(self) -> None:
        """Follow the running jobs from the calling thread until ``rest`` (see ``Runner``)."""
        if _pump is not None:
            _pump.attend()

    def rest(self) -> None:
        """Leave the running jobs to the pump's own thread again (see ``Runner``)."""
        if _pump is not None:
            _pump.rest()

    def start(self, run_id: str, job: dict[str, Any], log_path: Path, *, deployment: str | None = None,
              pool: str | None = None, attempt: int | None = None) -> ProcessHandle:
        """Launch ``job``; raises ``LaunchError`` for an invalid or unstartable job.
        (``deployment``, ``pool`` and ``attempt`` label nothing here: a process has no labels,
        and never outlives its daemon.)

        A failure to create the log file is an ``OSError`` (infrastructure,
        not the job's fault). The daemon's ``ORCHESTRA_RUN_ID`` never leaks in.
        """
        problems = validate_process_job(job)
        if problems:
            raise LaunchError("invalid process job: " + "; ".join(problems))
        launch = self._resolve(run_id, job)
        writer = BoundedLogWriter(Path(log_path), launch.log_max_bytes)
        try:
            child = _spawn(launch)
        except LaunchError:
            writer.close()
            raise
        return self._track(child, writer, launch.grace, run_id)

    def _track(self, child: Child, writer: BoundedLogWriter, grace: float, run_id: str, *,
               start_time: int | None = None) -> ProcessHandle:
        tracked = _Tracked(child, writer, run_id, start_time)
        tracked.pidfd = self._open_pidfd(child.pid)
        _shared_pump().add(tracked, self._drain_grace)
        return ProcessHandle(tracked, grace)

    def hold(self, run_id: str, job: dict[str, Any]) -> HeldJob | None:
        """Make ``job``'s process now, held before ``exec`` until ``start_held``; None
        when it cannot be held faithfully (it then starts the ordinary way).

        A burst's starts cost the loop's thread about half a millisecond each,
        most of it waiting for the child to reach ``exec`` while the cores are
        busy with the jobs already running. Made while the worker waits for the runs to fall
        due (``Launcher.prepare``), a start is one write to a pipe. Only a job
        whose launch cannot differ is held: valid, its executable resolved to a
        program the kernel runs itself (a binary or a ``#!`` script: a shell
        would run any other file as a script), an environment the holding shell
        passes on unchanged (``runners.spawn.hold``).
        """
        if validate_process_job(job):
            return None
        try:
            launch = self._resolve(run_id, job)
        except LaunchError:
            return None
        name = launch.argv[0]
        executable = name if os.sep in name else _executables.lookup(name, launch.env.get("PATH", os.defpath))
        if executable is None or not _kernel_runs(os.path.join(launch.cwd, executable)):
            return None
        try:
            child = hold(launch.argv, env=launch.env, cwd=str(launch.cwd))
        except OSError:
            return None
        # The start time is the job's too (``exec`` keeps it): read now, not in the burst.
        return None if child is None else HeldJob(launch, child, _start_time(child.pid))

    def start_held(self, held: HeldJob, log_path: Path, note: str | None = None) -> ProcessHandle:
        """Release a held job: from here on, as ``start``. ``OSError`` if its holder
        is gone (dropped); the caller then starts the job the ordinary way.

        ``note``: the worker's line saying the attempt started, written once the job
        is released (through the log's own descriptor, not a second open of the file)
        and before any of its output, which waits in its pipe until it is tracked.
        """
        writer = BoundedLogWriter(Path(log_path), held.launch.log_max_bytes)  # before: a job never runs untracked
        try:
            held.child.release()
        except OSError:
            writer.close()
            raise
        if note is not None:
            writer.note(note)
        return self._track(held.child, writer, held.launch.grace, held.launch.env["ORCHESTRA_RUN_ID"],
                           start_time=held.start_time)

    def reap_orphan(self, ident: str) -> bool:
        """SIGKILL the group ``ident`` names if it still runs and is provably ours.

        Ours means: same boot, and the leader, if still there, has the recorded
        start time. With the leader gone, a live member of the group counts,
        since a PID that is still some group's ID is never handed out again.
        Raises ``ValueError`` for an ident this runner did not make.
        """
        parsed = _Ident.parse(ident)
        if parsed.boot_id != _boot_id() or not _group_is_alive(parsed.pid, parsed.start_time):
            return False
        return _killpg(parsed.pid, signal.SIGKILL)

    def reap_unrecorded(self, run_id: str) -> bool:
        """SIGKILL the process groups of jobs started for ``run_id`` whose start was
        never recorded (their daemon died between the start and its next write, so
        no ident was stored); True if any ran.

        Every job carries ``ORCHESTRA_RUN_ID`` in its environment, and run ids are
        unique, so a process whose initial environment holds this run's id is one
        of its jobs (or their children, in the same group).
        """
        needle = b"\0ORCHESTRA_RUN_ID=" + os.fsencode(run_id) + b"\0"
        own_group = os.getpgrp()
        groups = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                environ = b"\0" + Path(f"/proc/{name}/environ").read_bytes()
                if needle in environ + b"\0":
                    groups.add(os.getpgid(int(name)))
            except (OSError, ProcessLookupError):  # gone meanwhile, or not ours to read
                continue
        return any([_killpg(group, signal.SIGKILL) for group in groups - {own_group}])

    def _resolve(self, run_id: str, job: dict[str, Any]) -> _Launch:
        cwd = self._working_dir(job.get("workingDir") or ".")
        # The daemon's environment, then this run's id, then the job's own values.
        env = {**self._daemon_env(), "ORCHESTRA_RUN_ID": run_id, **(job.get("env") or {})}
        grace = job.get("terminationGracePeriod")
        grace_s = DEFAULT_GRACE if grace is None else parse_duration(grace).total_seconds()
        log_max = job.get("logMaxBytes") or DEFAULT_LOG_MAX_BYTES
        return _Launch(list(job["command"]), env, cwd, grace_s, log_max)

    def _working_dir(self, working_dir: str) -> Path:
        """The job's directory, resolved against the spec directory; ``LaunchError`` if it is none.

        The default (the spec directory itself) is checked by the launch, whose
        failure to enter it is reported in the same words; others are checked
        here, where the error can say what the relative path resolved to.
        """
        if working_dir == ".":
            return self._base_dir
        cwd = (self._base_dir / working_dir).resolve()
        if not cwd.is_dir():
            what = "is not a directory" if cwd.exists() else "does not exist"
            raise LaunchError(f"working directory {working_dir!r} {what} (resolved to {cwd})")
        return cwd

    def _daemon_env(self) -> dict[str, str]:
        """The environment jobs inherit: the daemon's, copied at the first start.

        Copying ``os.environ`` costs as much as a quarter of a launch; a daemon
        does not change its own environment while it runs, so once is enough.
        """
        if self._base_env is None:
            self._base_env = dict(os.environ)
        return self._base_env

    def _open_pidfd(self, pid: int) -> int | None:
        if not self._use_pidfd:
            return None
        try:
            return os.pidfd_open(pid)
        except OSError:  # e.g. ENOSYS on an old kernel: fall back to polling
            return None


# --- launching ---------------------------------------------------------------


def _spawn(launch: _Launch) -> Child:
    """Start the process (argv as is, never a shell) or raise ``LaunchError``."""
    name = launch.argv[0]
    executable = name if os.sep in name else _executables.lookup(name, launch.env.get("PATH", os.defpath))
    try:
        try:
            return spawn(launch.argv, executable=executable, env=launch.env, cwd=str(launch.cwd))
        except FileNotFoundError:
            if executable is None or os.sep in name:
                raise
            # Removed since it was found (or a missing #! interpreter, or working
            # directory): search the PATH as the child would, which says which.
            _executables.forget(name)
            return spawn(launch.argv, executable=None, env=launch.env, cwd=str(launch.cwd))
    except OSError as err:
        if is_shortage(err):  # the daemon's or the machine's want, not the job's: the run waits
            raise
        raise LaunchError(_launch_failure(err, launch)) from None


def _kernel_runs(path: str) -> bool:
    """Is ``path`` a program ``execve`` runs itself (ELF, or a ``#!`` script)?"""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False
    return head == b"\x7fELF" or head.startswith(b"#!")


class _ExecutableCache:
    """Where a command name resolves on the PATH, remembered for ``TTL`` seconds.

    ``posix_spawn`` needs the file itself (``runners.spawn``), and searching the
    PATH costs a ``stat`` per directory before the right one (``Popen`` had the
    child try ``execve`` in each: a sixth of a short job's launch with a dozen
    directories). Only names looked up on a PATH of
    absolute directories are kept, as the child resolves relative ones from
    its own working directory; a program installed earlier on the PATH is
    found once the entry expires, and one removed is searched again at once.
    """

    TTL = 2.0  # seconds

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, name: str, path: str) -> str | None:
        """The file the child would run for ``name``; None: let the child search."""
        key, now = (name, path), time.monotonic()
        with self._lock:
            found = self._found.get(key)
        if found is not None and now - found[1] < self.TTL:
            return found[0]
        if os.sep in name or not all(os.path.isabs(d) for d in path.split(os.pathsep)):
            return None
        resolved = shutil.which(name, path=path)
        if resolved is None:
            return None
        with self._lock:
            self._found[key] = (resolved, now)
        return resolved

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [key for key in self._found if key[0] == name]:
                del self._found[key]


_executables = _ExecutableCache()


def _launch_failure(err: OSError, launch: _Launch) -> str:
    """Turn the child's exec/chdir error into a sentence a user can act on."""
    exe = launch.argv[0]
    if err.filename == str(launch.cwd):
        return f"cannot enter working directory {launch.cwd}: {err.strerror}"
    found = _which(exe, launch)
    if isinstance(err, FileNotFoundError):
        if found is not None:
            return f"cannot run {exe!r} ({found}): its interpreter (the #! line) was not found"
        if os.sep in exe:
            return f"executable {exe!r} not found (relative paths start at {launch.cwd})"
        return f"executable {exe!r} not found on PATH ({launch.env.get('PATH', '')})"
    if isinstance(err, PermissionError):
        return f"permission denied running {exe!r}" + (f" ({found}): is it executable?" if found else "")
    return f"cannot run {exe!r}: {err.strerror or err}"


def _which(exe: str, launch: _Launch) -> str | None:
    """Where ``exe`` resolves, looked up as the child does; None if nowhere."""
    if os.sep in exe:
        path = launch.cwd / exe
        return str(path) if path.exists() else None
    for directory in launch.env.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(launch.cwd, directory or ".", exe)
        if candidate.is_file():
            return str(candidate)
    return None


# --- validation --------------------------------------------------------------


def validate_process_job(job: Any) -> list[str]:
    """Every problem with a rendered process job, as ``"field: what is wrong"``.

    Unknown fields are problems (fail closed): a misspelt ``workdir`` would
    otherwise be silently ignored. ``null`` means "absent" for optional fields.
    """
    if not isinstance(job, dict):
        return [f"job: must be an object, got {json_type(job)}"]
    problems = [
        f"{key}: unknown field (a process job takes {', '.join(PROCESS_JOB_FIELDS)})"
        for key in job
        if key not in PROCESS_JOB_FIELDS
    ]
    problems += _check_command(job.get("command"))
    problems += check_env(job.get("env"))
    problems += _check_working_dir(job.get("workingDir"))
    problems += check_grace(job.get("terminationGracePeriod"))
    problems += check_log_max(job.get("logMaxBytes"))
    return problems


def _check_command(command: Any) -> list[str]:
    if isinstance(command, str):
        return ["command: must be a list of strings (argv), not one string: jobs never run through a shell"]
    if not isinstance(command, list) or not command:
        return [f"command: must be a non-empty list of strings, got {json_type(command)}"]
    problems = [check_string(f"command[{i}]", arg) for i, arg in enumerate(command)]
    if command[0] == "":
        problems.append("command[0]: the executable must not be empty")
    return [p for p in problems if p]


def _check_working_dir(working_dir: Any) -> list[str]:
    return [] if working_dir is None else [p for p in [check_string("workingDir", working_dir)] if p]


# --- /proc: process identity that survives PID reuse ---------------------------


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start_time: int  # clock ticks after boot


@dataclass(frozen=True)
class _Ident:
    """``pid:<pid>:<start time>:<boot id>``: a process that ever existed, once."""

    pid: int
    start_time: int
    boot_id: str

    def format(self) -> str:
        return f"pid:{self.pid}:{self.start_time}:{self.boot_id}"

    @classmethod
    def parse(cls, ident: str) -> _Ident:
        parts = ident.split(":")
        if len(parts) != 4 or parts[0] != "pid" or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f"not a process runner ident: {ident!r}")
        return cls(int(parts[1]), int(parts[2]), parts[3])


def _read_stat(pid: int) -> _Stat | None:
    """Fields of ``/proc/<pid>/stat``; None if there is no such process."""
    try:  # plain ``os`` calls: the pump reads this for every job it reaps
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)  # one line, well under a page
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return _Stat(fields[0].decode(), int(fields[2]), int(fields[19]))


def _start_time(pid: int) -> int | None:
    """A fresh child's start time (it is at worst a zombie, since only the pump reaps);
    None if ``/proc`` cannot be read, which for a child not yet reaped means no
    descriptor, memory or the like is left."""
    stat = _read_stat(pid)
    return None if stat is None else stat.start_time


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _group_is_alive(pgid: int, start_time: int) -> bool:
    """Does a live (non-zombie) member of the group started at ``start_time`` remain?"""
    leader = _read_stat(pgid)
    if leader is not None and leader.start_time != start_time:
        return False  # the PID was recycled, so our group is long gone
    members = (_read_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return any(
        m is not None and m.pgrp == pgid and m.state not in "ZXx" and m.start_time >= start_time for m in members
    )
