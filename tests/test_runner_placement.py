"""A held job is woken on another core than the loop releasing it, and then runs with
its whole CPU mask (``runners.placement``), even when the loop gave the mask back late.

Real processes and real masks; needs two CPUs (this project's machines have two: with one,
the tests fail rather than skip, and placement does nothing there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.runners import placement
from orchestra.runners.spawn import HeldChild, _release_unread, hold


def cpus_allowed(pid: int) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(pid))


def _pgrp(pid: str) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        return int(raw[raw.rindex(b")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and _pgrp(name) == pgid]


@pytest.fixture
def all_cpus() -> frozenset[int]:
    cpus = frozenset(os.sched_getaffinity(0))
    if len(cpus) < 2:  # as test_runner_held expects glibc's posix_spawn: this project's machines have it
        pytest.fail("placing a job on another core needs two CPUs, which this project's machines have")
    return cpus


@pytest.fixture
def held() -> Iterator[list[HeldChild]]:
    """Held jobs a test made: each, released or not, is ended with its process group and reaped."""
    made: list[HeldChild] = []
    yield made
    for child in made:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
        child.drop()  # closes what a held one still has open
        with contextlib.suppress(OSError):  # a released one's output pipe
            child.close_stdout()


def make_held(made: list[HeldChild], argv: list[str]) -> HeldChild:
    child = hold(argv, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd="/")
    assert child is not None, "this machine's shell is expected to hold jobs"
    made.append(child)
    return child


@pytest.mark.timeout(30)
def test_the_job_is_woken_without_the_releasing_threads_core_and_gets_its_mask_back(
        all_cpus: frozenset[int], held: list[HeldChild]) -> None:
    child = make_held(held, ["true"])
    seen: list[tuple[int, frozenset[int]]] = []

    def wake() -> None:  # stands for the write: what the kernel sees when the job wakes
        seen.append((placement._GETCPU(), cpus_allowed(child.pid)))

    placement.wake_elsewhere(child.pid, placement.job_cpus(child.pid), wake, lambda pid: True)
    (here, mask_at_wake), = seen
    assert here not in mask_at_wake and mask_at_wake == all_cpus - {here}
    assert cpus_allowed(child.pid) == all_cpus


@pytest.mark.timeout(30)
def test_a_job_that_ran_before_its_mask_came_back_gets_it_on_all_it_started(
        all_cpus: frozenset[int], held: list[HeldChild]) -> None:
    """The loop descheduled between the wake-up and the give-back: the job already ran and
    started a process, which inherited the narrow mask; both get the whole one back."""
    child = make_held(held, ["sh", "-c", "sleep 30 & wait"])
    release = child._release_fd

    def wake_then_stall() -> None:
        os.write(release, b"go\n")
        deadline = time.monotonic() + 10
        while len(group_members(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(group_members(child.pid)) >= 2, "the job never started its sleep"

    placement.wake_elsewhere(child.pid, placement.job_cpus(child.pid), wake_then_stall,
                             lambda _pid: _release_unread(release))
    members = group_members(child.pid)
    assert len(members) >= 2
    assert {pid: cpus_allowed(pid) for pid in members} == {pid: all_cpus for pid in members}


@pytest.mark.timeout(30)
def test_a_late_give_back_to_a_job_still_held_restores_its_mask(all_cpus: frozenset[int],
                                                                held: list[HeldChild]) -> None:
    """The give-back came late (the loop was descheduled), but the shell had not read its
    line yet: it is still the holding shell, and only its own mask needs restoring."""
    child = make_held(held, ["true"])
    release = child._release_fd
    assert _release_unread(release)  # held: its shell still has the pipe open

    def stall_then_wake() -> None:
        time.sleep(0.002)  # well past SURELY_BEFORE_EXEC_NS, before anything is written

    placement.wake_elsewhere(child.pid, placement.job_cpus(child.pid), stall_then_wake,
                             lambda _pid: _release_unread(release))
    assert cpus_allowed(child.pid) == all_cpus
    child.release()
    _, status = os.waitpid(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.timeout(30)
def test_a_held_shell_that_went_on_to_its_job_is_no_longer_counted_held(held: list[HeldChild]) -> None:
    child = make_held(held, ["sleep", "30"])
    os.write(child._release_fd, b"go\n")
    deadline = time.monotonic() + 20
    while os.readlink(f"/proc/{child.pid}/exe") != os.path.realpath("/usr/bin/sleep") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not _release_unread(child._release_fd)  # its exec closed the pipe's read end


@pytest.mark.timeout(30)
def test_a_released_held_job_runs_with_the_mask_it_was_made_with(all_cpus: frozenset[int],
                                                                 held: list[HeldChild], tmp_path: Path) -> None:
    out = tmp_path / "cpus"
    child = make_held(held, [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write("
                                                   "repr(sorted(os.sched_getaffinity(0))))"])
    child.release()
    _, status = os.waitpid(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text() == repr(sorted(all_cpus))


@pytest.mark.timeout(30)
def test_a_mask_the_job_set_itself_before_the_late_give_back_is_left_alone(
        all_cpus: frozenset[int], held: list[HeldChild], tmp_path: Path) -> None:
    first = min(all_cpus)
    flag = tmp_path / "pinned"
    child = make_held(held, [sys.executable, "-c", f"import os, time; os.sched_setaffinity(0, {{{first}}}); "
                                                   f"open({str(flag)!r}, 'w').close(); time.sleep(30)"])
    release = child._release_fd

    def wake_then_stall() -> None:
        os.write(release, b"go\n")
        deadline = time.monotonic() + 20
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert flag.exists(), "the job never set its mask"

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {first})  # this thread on the core the job pins itself to: not the narrow mask
    try:
        placement.wake_elsewhere(child.pid, placement.job_cpus(child.pid), wake_then_stall,
                             lambda _pid: _release_unread(release))
    finally:
        os.sched_setaffinity(0, before)
    assert cpus_allowed(child.pid) == {first}


@pytest.mark.timeout(30)
def test_a_job_that_may_run_on_one_cpu_only_is_released_as_it_is(held: list[HeldChild], tmp_path: Path) -> None:
    """Nowhere else to place it (one CPU allowed, as under `taskset -c 0`): nothing is changed."""
    out = tmp_path / "cpus"
    child = make_held(held, [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write("
                                                   "repr(sorted(os.sched_getaffinity(0))))"])
    only = min(os.sched_getaffinity(0))
    os.sched_setaffinity(child.pid, {only})
    assert placement.job_cpus(child.pid) is None
    child._cpus = placement.job_cpus(child.pid)  # as if it had been made so
    child.release()
    _, status = os.waitpid(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text() == repr([only])
