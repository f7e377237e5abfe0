"""A runner that cannot be reached: its pool's runs wait in the queue, and the pool is tried again.

``Outages`` runs under an injected clock. The Docker runner's tests use real
sockets: no socket at all, one that refuses, and one that accepts and then
hangs up mid-request (the engine may have seen that request, so it must stay
an ordinary launch failure). The daemon's test points a real daemon at an
engine socket that is not there yet, then makes it appear (a symlink to the
real engine's socket), as when dockerd starts after orchestra or restarts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestra.runners.base import LaunchError, Unreachable
from orchestra.workers.outages import HOLD_FIRST, HOLD_MAX, WARN_EVERY, Outages
from tests.daemon_fixtures import DaemonProcess, daemon_factory, runs_json, store, wait_for, workdir
from tests.docker_fixtures import DOCKER_POOL, TEST_IMAGE, docker_engine_fixture

__all__ = ["daemon_factory", "docker_engine_fixture", "store", "workdir"]  # fixtures used by name below

Factory = Callable[..., DaemonProcess]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the pool's hold ------------------------------------------------------------------------


def test_a_pool_is_left_alone_then_tried_with_one_run_and_the_wait_doubles() -> None:
    clock = Clock()
    outages = Outages(clock)
    assert outages.room("boxes", 8) == 8 and outages.retry_in("boxes") is None
    err = Unreachable("cannot reach the Docker engine at x: connection refused")
    for _ in range(8):  # every start of the first claim fails: one outage
        outages.unreachable("boxes", err)
    assert outages.room("boxes", 8) == 0 and outages.retry_in("boxes") == HOLD_FIRST
    assert outages.room("local", 8) == 8, "another pool of the worker goes on"
    waits = []
    for _ in range(6):
        clock.now += outages.retry_in("boxes") or 0
        assert outages.room("boxes", 8) == 1, "one run tries the engine"
        assert outages.room("boxes", 8) == 0, "and no other until its start is known"
        outages.unreachable("boxes", err)
        waits.append(outages.retry_in("boxes"))
    assert waits == [4.0, 8.0, 16.0, HOLD_MAX, HOLD_MAX, HOLD_MAX]
    clock.now += HOLD_MAX
    assert outages.room("boxes", 8) == 1
    outages.reached("boxes")
    assert outages.room("boxes", 8) == 8 and outages.retry_in("boxes") is None


def test_a_try_that_never_comes_back_does_not_block_the_pool() -> None:
    clock = Clock()
    outages = Outages(clock)
    outages.unreachable("boxes", Unreachable("down"))
    clock.now += HOLD_FIRST
    assert outages.room("boxes", 8) == 1  # its run was cancelled before it started, say
    clock.now += HOLD_FIRST
    assert outages.room("boxes", 8) == 1


def test_an_outage_is_one_warning_then_info_lines_and_its_end_is_told(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outages = Outages(clock)
    caplog.set_level(logging.INFO, "orchestra.worker")
    err = Unreachable("cannot reach the Docker engine at x: no socket there: is dockerd running?")
    outages.unreachable("boxes", err)
    for _ in range(30):  # 30 tries, well over ten minutes
        clock.now += outages.retry_in("boxes") or 0
        outages.room("boxes", 1)
        outages.unreachable("boxes", err)
    outages.reached("boxes")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == ("pool 'boxes': cannot reach the Docker engine at x: no socket there: is dockerd "
                           "running?; its runs wait in the queue, and the runner is tried again in 2s")
    assert len(warnings) == 1 + int((clock.now - 1000.0) // WARN_EVERY)
    assert caplog.records[-1].getMessage().startswith("pool 'boxes': its runner is reachable again after ")


class Engine:
    """A runner's ``probe`` as ``Outages`` sees it: away until ``up``; counts the pings."""

    def __init__(self) -> None:
        self.up = False
        self.pings = 0

    def probe(self) -> None:
        self.pings += 1
        if not self.up:
            raise Unreachable("cannot reach the Docker engine at x: connection refused", probe=self.probe)


def test_with_a_probe_nothing_is_claimed_until_the_runner_answers(caplog: pytest.LogCaptureFixture) -> None:
    """The probe replaces the run that used to try the engine: no claim, so no claim put back, while it is away."""
    clock, engine, woken = Clock(), Engine(), []
    # the probe's thread, run at once here: what it does, not when, is under test
    outages = Outages(clock, wake=lambda: woken.append(clock.now), run_probe=lambda work: work())
    caplog.set_level(logging.INFO, "orchestra.worker")
    outages.unreachable("boxes", Unreachable("cannot reach the Docker engine at x: no socket", probe=engine.probe))
    waits = []
    for _ in range(5):
        clock.now += outages.retry_in("boxes") or 0
        assert outages.room("boxes", 8) == 0, "the probe tries the engine, not a run"
        waits.append(outages.retry_in("boxes"))
    assert engine.pings == 5 and len(woken) == 5
    assert waits == [4.0, 8.0, 16.0, HOLD_MAX, HOLD_MAX]
    assert outages.current()[0][1] == "cannot reach the Docker engine at x: connection refused"
    engine.up = True
    clock.now += HOLD_MAX
    assert outages.room("boxes", 8) == 0 and engine.pings == 6, "the probe gets its answer"
    assert outages.current() == [] and outages.retry_in("boxes") is None, "which ends the outage"
    assert outages.room("boxes", 8) == 8 and engine.pings == 6 and len(woken) == 6
    tries = [r.getMessage() for r in caplog.records if "still cannot reach" in r.getMessage()]
    assert len(tries) == 5 and all(r.levelno == logging.INFO for r in caplog.records[1:]), tries
    assert caplog.records[-1].getMessage() == "pool 'boxes': its runner is reachable again after 90s; its runs start"


def test_an_engine_gone_again_after_its_probe_answered_is_a_new_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock, engine = Clock(), Engine()
    outages = Outages(clock, run_probe=lambda work: work())
    caplog.set_level(logging.INFO, "orchestra.worker")
    err = Unreachable("down", probe=engine.probe)
    outages.unreachable("boxes", err)
    engine.up = True
    clock.now += HOLD_FIRST
    assert outages.room("boxes", 8) == 0 and outages.room("boxes", 8) == 8
    engine.up = False  # gone again between the ping and the creates
    for _ in range(8):
        outages.unreachable("boxes", err)
    assert outages.retry_in("boxes") == HOLD_FIRST and engine.pings == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.WARNING]


def test_a_probe_still_out_holds_the_pool_and_one_answering_late_is_heard() -> None:
    """A probe may take the client's timeout: no second probe meanwhile, and no run."""
    clock, engine, started = Clock(), Engine(), []
    outages = Outages(clock, run_probe=started.append)  # the probe's thread, held until we run it
    outages.unreachable("boxes", Unreachable("down", probe=engine.probe))
    clock.now += HOLD_FIRST
    assert outages.room("boxes", 8) == 0 and len(started) == 1
    for _ in range(3):
        clock.now += HOLD_MAX
        assert outages.room("boxes", 8) == 0
    assert len(started) == 1, "one probe out at a time"
    engine.up = True
    started[0]()
    assert outages.room("boxes", 8) == 8


def test_a_probe_answering_after_the_outage_ended_changes_nothing() -> None:
    clock, engine, started = Clock(), Engine(), []
    outages = Outages(clock, run_probe=started.append)
    err = Unreachable("down", probe=engine.probe)
    outages.unreachable("boxes", err)
    clock.now += HOLD_FIRST
    outages.room("boxes", 8)
    outages.reached("boxes")  # a start from before the outage's claim came back fine
    started[0]()  # the engine is still away, says the late probe
    assert outages.room("boxes", 8) == 8 and outages.current() == []


# -- the Docker runner: what counts as never reached ------------------------------------------


@pytest.fixture(name="hangs_up")
def hangs_up_fixture(tmp_path: Path) -> Iterator[str]:
    """A unix socket that takes each connection, reads the request and closes it unanswered."""
    path = tmp_path / "hangs-up.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.mark.parametrize(("host", "words"), [("tcp://127.0.0.1:1", "connection refused"),
                                             ("unix:///nonexistent/docker.sock", "no socket there"),
                                             ("refusing", "connection refused")])
def test_an_engine_that_cannot_be_connected_to_is_unreachable(host: str, words: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.runners.docker import DockerRunner

    if host == "refusing":  # a socket file nobody listens on: what a stopped dockerd leaves behind
        path = tmp_path / "docker.sock"
        bound = socket.socket(socket.AF_UNIX)
        bound.bind(str(path))
        bound.close()
        host = f"unix://{path}"
    monkeypatch.setenv("DOCKER_HOST", host)
    runner = DockerRunner(tmp_path)
    with pytest.raises(Unreachable, match=f"cannot reach the Docker engine at {host}: {words}") as caught:
        runner.start("r1", {"image": TEST_IMAGE, "command": ["true"]}, tmp_path / "r1.log")
    assert caught.value.probe == runner.probe, "the outage tries the engine with the runner's probe"
    with pytest.raises(Unreachable, match=f"cannot reach the Docker engine at {host}: {words}"):
        runner.probe()


def test_a_create_the_engine_hung_up_on_is_a_plain_launch_failure(hangs_up: str, tmp_path: Path) -> None:
    """The engine may have made the container before it went: putting the run back could run it twice."""
    import docker

    from orchestra.runners.docker import DockerRunner

    client = docker.DockerClient(base_url=hangs_up, version="1.41")  # no version call: the create is the first
    runner = DockerRunner(tmp_path, client_factory=lambda: client)
    with pytest.raises(LaunchError) as caught:
        runner.start("r1", {"image": TEST_IMAGE, "command": ["true"]}, tmp_path / "r1.log")
    assert not isinstance(caught.value, Unreachable), caught.value
    with pytest.raises(Unreachable):  # a ping makes nothing: an engine that hangs up on it is away
        runner.probe()


def test_the_probe_of_a_running_engine_answers(docker_engine: Any, tmp_path: Path) -> None:
    from orchestra.runners.docker import DockerRunner

    DockerRunner(tmp_path).probe()


def test_an_engine_slow_to_answer_holds_up_no_other_call_of_the_runner(docker_engine: Any,
                                                                       tmp_path: Path) -> None:
    """Making the client asks the engine's version (the client's timeout, on a host that drops
    packets); meanwhile the runner's other calls (its close, when the daemon stops) go on."""
    import docker

    from orchestra.runners.docker import DockerRunner

    entered, release = threading.Event(), threading.Event()

    def slow_client() -> Any:
        entered.set()
        release.wait(30)
        return docker.from_env()

    runner = DockerRunner(tmp_path, client_factory=slow_client)
    prober = threading.Thread(target=runner.probe, daemon=True)
    prober.start()
    try:
        assert entered.wait(10), "the probe never asked for the client"
        closer = threading.Thread(target=runner.close, daemon=True)
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), "close waited for the engine's client"
    finally:
        release.set()
        prober.join(30)
    assert not prober.is_alive()


# -- through a real daemon ---------------------------------------------------------------------


SPECS = DOCKER_POOL + """\
---
apiVersion: orchestra/v1
kind: Deployment
metadata: {name: boxed}
spec: {pool: boxes, command: ["echo", "inside a box"]}
---
apiVersion: orchestra/v1
kind: Deployment
metadata: {name: plain}
spec: {pool: local, command: ["echo", "no box needed"]}
"""


@pytest.mark.timeout(120)
def test_runs_wait_for_an_engine_that_is_not_there_yet_and_start_once_it_is(
        workdir: Path, daemon_factory: Factory, docker_engine: Any, store: Any) -> None:
    real = Path(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://"))
    assert real.is_socket(), "this test stands a symlink in for the engine's unix socket"
    socket_path = workdir / "engine" / "docker.sock"
    (workdir / "specs" / "boxes.yaml").write_text(SPECS)  # beside the fixture's process pool, local
    daemon = daemon_factory("--no-api")
    daemon.env["DOCKER_HOST"] = f"unix://{socket_path}"
    daemon.start()
    daemon.ready()
    boxed = daemon.cli("run", "boxed").stdout.strip()
    try:
        waiting = wait_for(lambda: next((r for r in runs_json(daemon) if r["id"] == boxed
                                         and r["state"] == "Scheduled" and "the run waits" in r["stateReason"]), None),
                           timeout=30, message="the run put back to wait for the engine")
        assert "cannot reach the Docker engine" in waiting["stateReason"] and waiting["attempt"] == 1
        plain = daemon.cli("run", "plain").stdout.strip()
        wait_for(lambda: any(r["id"] == plain and r["state"] == "Completed" for r in runs_json(daemon)),
                 timeout=30, message="the process pool's run, meanwhile")
        status = wait_for(lambda: (lambda out: out if "Pool boxes: its runs WAIT since" in out else None)(
            daemon.cli("status").stdout), timeout=20, message="orchestra status to show the pool waiting")
        assert "cannot reach the Docker engine" in status
        socket_path.parent.mkdir()
        socket_path.symlink_to(real)  # the engine comes up
        done = wait_for(lambda: next((r for r in runs_json(daemon) if r["id"] == boxed
                                      and r["state"] == "Completed"), None), timeout=60, message="the boxed run")
        assert done["attempt"] == 1, "waiting for the engine spent an attempt"
        moves = [(e.from_state, e.to_state) for e in store.events(boxed)]
        assert moves.count(("Pending", "Scheduled")) == 1, f"the engine was tried with runs, not its probe: {moves}"
        assert "inside a box" in daemon.cli("logs", boxed).stdout
        output = daemon.output()
        assert output.count("WARNING orchestra.worker: pool 'boxes': cannot reach the Docker engine") == 1
        assert "pool 'boxes': its runner is reachable again after" in output
        wait_for(lambda: "WAIT" not in daemon.cli("status").stdout, timeout=20, message="the wait gone from status")
        assert daemon.stop() == 0
    finally:
        for container in docker_engine.containers.list(all=True, filters={"label": f"orchestra.run-id={boxed}"}):
            container.remove(force=True)
