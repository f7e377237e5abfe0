"""Starting a job's process without holding the interpreter lock while it starts.

``subprocess.Popen`` holds the lock (the GIL) while the child is being made
and runs a good deal of Python around it: with the daemon's loop recording
runs in one thread and jobs starting in others, every start stalled the loop
for about as long as the start itself (measured: a thread doing nothing but
small queries lost 40 % of its throughput to a thread starting processes
with Popen, 8 % with posix_spawn). glibc's ``posix_spawn`` makes the child
with ``clone(CLONE_VFORK)`` in C, and ``ctypes`` releases the lock for the
call. Python's own ``os.posix_spawn`` cannot set the child's working
directory, so the C functions are called directly: the file actions (stdin
from /dev/null, stdout and stderr into one pipe, ``chdir``, every other
descriptor closed) and the attributes (a new session; SIGPIPE and SIGXFSZ
back to their defaults, as ``Popen`` does) are the ones ``ProcessRunner``
used to ask of ``Popen``.

Where any of it is missing (not glibc, glibc older than 2.34, a name that
is not resolved to a file here), ``spawn`` falls back to ``Popen``, which
also words the errors: a failed ``posix_spawn`` is retried through it, so a
job that cannot start is reported exactly as before.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import resource
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from orchestra.runners.placement import job_cpus, wake_elsewhere

__all__ = ["Child", "HeldChild", "hold", "holding_is_faithful", "prepare", "raise_open_file_limit", "spawn"]

_POSIX_SPAWN_SETSIGMASK = 0x08  # glibc's <spawn.h>
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSID = 0x80
_OPAQUE = 1024  # bytes for posix_spawn_file_actions_t / posix_spawnattr_t / sigset_t (glibc: 80, 336, 128)


class Child:
    """A started process: its pid and the read end of its merged stdout/stderr pipe."""

    def __init__(self, pid: int, stdout: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.stdout = stdout
        self._popen = popen

    @property
    def started_by(self) -> str:
        """``posix_spawn`` or ``Popen``: how it was started (for tests and benchmarks)."""
        return "Popen" if self._popen is not None else "posix_spawn"

    def wait(self) -> int:
        """Reap the process; its exit code, negative for a signal (as ``subprocess``)."""
        if self._popen is not None:
            return self._popen.wait()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def close_stdout(self) -> None:
        if self._popen is not None and self._popen.stdout is not None:
            self._popen.stdout.close()
        else:
            os.close(self.stdout)


def spawn(argv: Sequence[str], *, executable: str | None, env: Mapping[str, str], cwd: str) -> Child:
    """Start ``argv`` in a new session in ``cwd`` with exactly ``env``; raises ``OSError``
    as ``Popen`` does. ``executable``: the file ``argv[0]`` resolved to (None: let
    ``Popen`` search the PATH as the child would)."""
    libc = _libc()
    if libc is not None and executable is not None:
        child = _posix_spawn(libc, argv, executable, env, cwd)
        if child is not None:
            return child
    return _popen(argv, executable, env, cwd)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit; the limit before.

    A running process job holds three of the daemon's descriptors (its output,
    its pidfd, its log) and a held job two: at the usual soft limit of 1,024
    a pool of a few hundred jobs ran out, and starts failed with "Too many
    open files". The hard limit is the administrator's word (systemd gives
    services and sessions 524,288). Jobs inherit the raised limit, as jobs in
    Docker's and Kubernetes' containers get the engine's: giving them the old
    one back (as Go's runtime does) cannot be done before ``exec`` with
    ``posix_spawn``, and done after it, a loaded machine let short jobs finish
    before it landed.
    """
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):  # a hard limit the kernel caps lower (RLIM_INFINITY)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return before


# Holding a job: its process is made ahead, and waits before ``exec`` in a fixed
# script of the system shell for one line on descriptor 3; the line releases it, end
# of file (the job dropped, or the daemon gone) ends it. The job's arguments are
# only ever "$@": never parsed, never expanded. dash (Debian's /bin/sh) sets PWD
# itself, so the job's own PWD is restored from the first argument ("-": none).
HOLD_SHELL = "/bin/sh"
HOLD_SCRIPT = ('read -r go <&3 && [ "$go" = go ] || exit 125; '
               'case $1 in -) unset PWD;; *) PWD=${1#=}; export PWD;; esac; shift; exec "$@" 3<&-')
_RELEASE = b"go\n"
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_OWNED = frozenset({"IFS", "OPTIND", "PPID"})  # POSIX shells reset these (dash stops on an odd OPTIND)


class HeldChild(Child):
    """A job's process made ahead, waiting before ``exec`` for ``release`` (see ``hold``)."""

    def __init__(self, pid: int, stdout: int, release_fd: int) -> None:
        super().__init__(pid, stdout)
        self._release_fd = release_fd
        self._state = "held"  # then "released" or "dropped"
        self._cpus = job_cpus(pid)  # its CPU mask: narrowed for the instant of the release

    def release(self) -> None:
        """Let the job run; ``OSError`` if its holder is gone or it was dropped (the
        caller then drops it and starts the job the ordinary way)."""
        if self._state != "held":
            raise OSError(f"a held job cannot be released once {self._state}")
        try:  # one line into an empty pipe: never blocks; woken on another core than this one
            wake_elsewhere(self.pid, self._cpus, lambda: os.write(self._release_fd, _RELEASE),
                           lambda _pid: _release_unread(self._release_fd))
        except OSError:
            self.drop()
            raise
        os.close(self._release_fd)
        self._state = "released"

    def drop(self) -> None:
        """End the held process without running its job, and reap it; once only."""
        if self._state != "held":
            return
        self._state = "dropped"
        os.close(self._release_fd)  # the holder reads end of file and exits
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # and at once, wherever it is
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close_stdout()


def _release_unread(release_fd: int) -> bool:
    """Is the holding shell surely not yet ``exec``ed into its job? Its descriptor 3, the
    read end of the pipe whose write end is ``release_fd``, is closed by the ``exec``
    line itself (``3<&-``): while the pipe still has a reader, no ``exec`` has begun.

    One ``poll`` of our own end (a pipe without readers reports an error to its
    writer), where reading the process's ``/proc`` entries cost 60-80 µs in a burst.
    """
    poller = select.poll()
    poller.register(release_fd, select.POLLOUT)
    return not any(events & select.POLLERR for _, events in poller.poll(0))


def hold(argv: Sequence[str], *, env: Mapping[str, str], cwd: str) -> HeldChild | None:
    """Make the process of ``argv`` now, held until ``HeldChild.release``: as ``spawn``
    would once released, with the executable looked up on the job's PATH by the shell.
    None where that could differ from ``spawn``: a shell that changes what it passes on
    (``holding_is_faithful``), an environment it would change, or no ``posix_spawn``."""
    libc = _libc()
    if libc is None or not _holdable_env(env) or not holding_is_faithful():
        return None
    return _hold(libc, argv, env, cwd)


def _hold(libc: Any, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> HeldChild | None:
    pwd = env.get("PWD")
    shell_env = {key: value for key, value in env.items() if key != "PWD"}
    args = [HOLD_SHELL, "-c", HOLD_SCRIPT, "orchestra-held", "-" if pwd is None else "=" + pwd, *argv]
    release_r, release_w = os.pipe()
    try:
        child = _posix_spawn(libc, args, HOLD_SHELL, shell_env, cwd, extra_fd=release_r)
    finally:
        os.close(release_r)
    if child is None:
        os.close(release_w)
        return None
    return HeldChild(child.pid, child.stdout, release_w)


def _holdable_env(env: Mapping[str, str]) -> bool:
    """Does the shell pass ``env`` on unchanged? It drops what are not shell names."""
    return all(_SHELL_NAME.fullmatch(key) and key not in _SHELL_OWNED for key in env)


_PROBE_ENV = {"ORCHESTRA_PROBE": "a b\nc", "LC_ALL": "C.UTF-8",  # (no locale coercion by Python)
              "PWD": "/orchestra-probe", "OLDPWD": "/", "SHLVL": "7", "_": "x",
              "LINENO": "3", "ENV": "/nonexistent", "PS4": "+ "}
_PROBE_ARGS = ["$1", "; x", "\"$@\"", ""]
_PROBE = "import os, sys; print(repr((sys.argv[1:], dict(os.environb))))"


@functools.cache
def holding_is_faithful() -> bool:
    """Does this system's shell hand a held job exactly the environment and arguments
    ``spawn`` would? Checked once, by holding and releasing a Python that reports
    them: dash (Debian's and Ubuntu's /bin/sh) does; bash, /bin/sh elsewhere, sets SHLVL and _."""
    libc = _libc()
    if libc is None or not os.access(HOLD_SHELL, os.X_OK):
        return False
    argv = [sys.executable, "-I", "-S", "-c", _PROBE, *_PROBE_ARGS]
    child = _hold(libc, argv, _PROBE_ENV, "/")
    if child is None:
        return False
    try:
        child.release()
    except OSError:  # dropped on the way
        return False
    reported = b""
    try:
        while chunk := os.read(child.stdout, 65536):
            reported += chunk
    finally:
        child.close_stdout()
        code = child.wait()
    expected = (_PROBE_ARGS, {os.fsencode(k): os.fsencode(v) for k, v in _PROBE_ENV.items()})
    try:
        return code == 0 and ast.literal_eval(reported.decode()) == expected
    except (ValueError, SyntaxError, UnicodeError):
        return False


def prepare(env: Mapping[str, str]) -> None:
    """Do what the first ``spawn`` would do once (load glibc's functions, make the
    attributes, encode the entries of ``env``), so that it starts as fast as the next."""
    libc = _libc()
    if libc is not None:
        _attributes(_quick_calls(libc))
    for key, value in env.items():
        try:
            _env_entry(key, value)
        except (UnicodeError, ValueError):  # the spawn that meets it falls back to Popen
            continue


def _popen(argv: Sequence[str], executable: str | None, env: Mapping[str, str], cwd: str) -> Child:
    popen = subprocess.Popen(list(argv), executable=executable, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, bufsize=0)
    assert popen.stdout is not None
    return Child(popen.pid, popen.stdout.fileno(), popen)


def _posix_spawn(libc: Any, argv: Sequence[str], executable: str, env: Mapping[str, str], cwd: str,
                 extra_fd: int | None = None) -> Child | None:
    """The started child, or None when ``posix_spawn`` refused (``Popen`` then tries,
    and explains the failure in its words)."""
    try:
        path = _c_string(executable)
        args = [_c_string(arg) for arg in argv]
        environment = [_env_entry(key, value) for key, value in env.items()]
        directory = _c_string(cwd)
    except (UnicodeError, ValueError):  # not encodable, or holding a NUL: Popen words it
        return None
    quick = _quick_calls(libc)
    attributes = _attributes(quick)
    if attributes is None:
        return None
    read_end, write_end = os.pipe()  # both close-on-exec: the child keeps only its dup2'ed copies
    actions = ctypes.create_string_buffer(_OPAQUE)
    quick.posix_spawn_file_actions_init(actions)
    pid = ctypes.c_int(0)
    try:
        failed = _add_file_actions(quick, actions, write_end, directory, extra_fd) or libc.posix_spawn(
            ctypes.byref(pid), path, actions, attributes,
            (ctypes.c_char_p * (len(args) + 1))(*args, None),
            (ctypes.c_char_p * (len(environment) + 1))(*environment, None))
    finally:
        quick.posix_spawn_file_actions_destroy(actions)
        os.close(write_end)
    if failed:
        os.close(read_end)
        return None
    return Child(pid.value, read_end)


def _c_string(text: str) -> bytes:
    """``text`` as the C string the child gets; ``ValueError`` if it holds a NUL."""
    encoded = os.fsencode(text)
    if b"\0" in encoded:
        raise ValueError("embedded NUL")
    return encoded


@functools.lru_cache(maxsize=4096)
def _env_entry(key: str, value: str) -> bytes:
    """``KEY=value`` as the child gets it; every job gets the daemon's environment, so the
    same few dozen entries are encoded (and checked) once, not per job."""
    return _c_string(key) + b"=" + _c_string(value)


def _add_file_actions(libc: Any, actions: Any, write_end: int, directory: bytes, extra_fd: int | None = None) -> int:
    """What ``Popen(stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, close_fds=True, cwd=...)``
    does to the child's descriptors and directory, and ``extra_fd`` as descriptor 3;
    0, or the first error."""
    # In this order: the child runs them as added, and ``write_end`` may itself be descriptor 3.
    calls = [
        libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0),
        libc.posix_spawn_file_actions_adddup2(actions, write_end, 1),
        libc.posix_spawn_file_actions_adddup2(actions, write_end, 2),
    ]
    if extra_fd is not None:
        calls.append(libc.posix_spawn_file_actions_adddup2(actions, extra_fd, 3))
    calls += [
        libc.posix_spawn_file_actions_addclosefrom_np(actions, 3 if extra_fd is None else 4),
        libc.posix_spawn_file_actions_addchdir_np(actions, directory),
    ]
    return next((code for code in calls if code), 0)


@functools.cache
def _attributes(libc: Any) -> Any | None:
    """The attributes ``Popen(start_new_session=True)`` amounts to, with SIGPIPE and SIGXFSZ
    back to their defaults and nothing blocked; None if glibc refused them.

    The same for every job, and ``posix_spawn`` only reads them: made once
    (and kept to the end) rather than in six foreign calls per start.
    """
    attributes = ctypes.create_string_buffer(_OPAQUE)
    defaults = ctypes.create_string_buffer(_OPAQUE)
    empty = ctypes.create_string_buffer(_OPAQUE)
    libc.posix_spawnattr_init(attributes)
    libc.sigemptyset(defaults)
    libc.sigemptyset(empty)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; a job must not inherit that
        libc.sigaddset(defaults, int(number))
    calls = (
        libc.posix_spawnattr_setsigdefault(attributes, defaults),
        libc.posix_spawnattr_setsigmask(attributes, empty),
        libc.posix_spawnattr_setflags(attributes, ctypes.c_short(
            _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK)),
    )
    if any(calls):
        libc.posix_spawnattr_destroy(attributes)
        return None
    return attributes


def _load_libc() -> Any:
    """glibc by its own name, else as ``find_library`` finds the C library (it runs
    ``ldconfig -p`` in a subprocess: 3 ms, in the first start of a burst)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name, use_errno=True) if name else None


@functools.cache
def _quick_calls(libc: Any) -> Any:
    """The same library for the calls that only fill in memory (file actions,
    attributes), called holding the GIL.

    Each ``CDLL`` call releases the GIL and takes it back. Another thread
    (the pump, noticing the last wave's exits) then takes it, and the loop
    waits for its return, 60 µs and more, for a call that takes one. Only
    ``posix_spawn`` itself, which waits for the child's ``exec``, is worth releasing it for.
    """
    quick = ctypes.PyDLL(libc._name, use_errno=True)
    for function in _FUNCTIONS:
        getattr(quick, function).restype = ctypes.c_int
    return quick


_FUNCTIONS = ("posix_spawn", "posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy",
              "posix_spawn_file_actions_addopen", "posix_spawn_file_actions_adddup2",
              "posix_spawn_file_actions_addclosefrom_np", "posix_spawn_file_actions_addchdir_np",
              "posix_spawnattr_init", "posix_spawnattr_destroy", "posix_spawnattr_setflags",
              "posix_spawnattr_setsigdefault", "posix_spawnattr_setsigmask", "sigemptyset", "sigaddset")


@functools.cache
def _libc() -> Any:
    """glibc's spawn functions through ctypes (which releases the GIL for each call);
    None where any is missing: ``Popen`` is used then."""
    if os.environ.get("ORCHESTRA_SPAWN") == "popen":  # to compare the two, or rule this out
        return None
    try:
        libc = _load_libc()
        if libc is None:
            return None
        for function in _FUNCTIONS:
            getattr(libc, function).restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
