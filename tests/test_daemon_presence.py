"""Is a daemon serving this store, and is its loop alive?

``orchestra status`` lists each daemon as running, stopped, or unresponsive
(gone quiet without stopping: ``kill -9``, a frozen process, its host gone);
the health check fails when the daemon's loop hangs while its API answers on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestra.api import app as app_module
from orchestra.cli.run_cmds import daemon_line
from orchestra.reconcile import presence
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.store import Store, open_store
from tests.api_fixtures import LiveApi, api_factory_fixture  # noqa: F401
from tests.daemon_fixtures import DaemonProcess, daemon_factory, wait_for, workdir  # noqa: F401

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    yield store
    store.close()


def written(store: Store, pid: int, seen: datetime, stopped: datetime | None = None) -> None:
    """A document as another daemon process would have left it."""
    store.put_status(f"daemon:elsewhere:{pid}", {"host": "elsewhere", "pid": pid, "paths": ["specs"], "workers": "all",
                           "startedAt": T0.isoformat(), "seenAt": seen.isoformat(),
                           "stoppedAt": stopped.isoformat() if stopped else None})


def test_of_two_running_daemons_saying_they_schedule_the_later_lead_is_shown(store: Store) -> None:
    """A leader killed leaves a document that reads as running, and as leading, until it
    goes quiet; the daemon that took the lead after it is the one status names."""
    for pid, since, said in ((7, T0 - timedelta(minutes=5), "materializes"), (8, T0, "materializes"),
                             (9, T0 - timedelta(minutes=9), "stands by")):
        store.put_status(f"daemon:elsewhere:{pid}", {"host": "elsewhere", "pid": pid, "paths": ["specs"],
                                                     "workers": "all", "startedAt": T0.isoformat(),
                                                     "seenAt": T0.isoformat(), "stoppedAt": None,
                                                     "schedules": said, "schedulesSince": since.isoformat()})
    found = {d["pid"]: d for d in presence.daemons(store, T0)}
    assert {pid: d["schedules"] for pid, d in found.items()} == {7: None, 8: "materializes", 9: "stands by"}
    assert not any("schedulesSince" in d for d in found.values())  # the API's model has no such field


def test_running_stopped_and_unresponsive_daemons(store: Store) -> None:
    clock = Clock()
    mine = presence.Presence(store, clock, {"paths": ["specs"], "workers": "local"})
    written(store, 7, seen=T0 - timedelta(seconds=31))  # went quiet without stopping
    written(store, 8, seen=T0 - timedelta(hours=1), stopped=T0 - timedelta(hours=1))
    mine.beat()
    found = presence.daemons(store, clock())
    assert [(d["pid"], d["state"]) for d in found] == [(os.getpid(), "running"), (7, "unresponsive"), (8, "stopped")]
    assert found[0]["host"] == socket.gethostname() and found[0]["workers"] == "local"
    assert found[0]["seenAt"] == T0.isoformat() and found[0]["stoppedAt"] is None

    clock.now = T0 + timedelta(seconds=31)  # no beat written since (the loop hangs, or the daemon is gone)
    assert presence.daemons(store, clock())[0]["state"] == "unresponsive"
    mine.stopped()
    assert presence.daemons(store, clock())[0]["state"] == "stopped"


def test_a_beat_is_written_at_most_every_ten_seconds(store: Store) -> None:
    clock = Clock()
    mine = presence.Presence(store, clock, {})
    mine.beat()
    clock.now = T0 + timedelta(seconds=5)
    for _ in range(100):  # a burst: the loop passes a hundred times
        mine.beat()
    assert store.get_status(mine.key)["seenAt"] == T0.isoformat()


def test_a_daemon_says_which_pools_wait_for_their_runner_and_status_shows_it(store: Store) -> None:
    clock = Clock()
    outages = [{"pool": "boxes", "error": "cannot reach the Docker engine at unix:///x.sock: no socket there",
                "since": (T0 - timedelta(seconds=75)).isoformat()}]
    mine = presence.Presence(store, clock, {"paths": ["specs"], "workers": "all"}, lambda: {"unreachable": outages})
    mine.beat()
    found = presence.daemons(store, clock())[0]
    assert found["unreachable"] == outages
    line = daemon_line(found, T0)
    assert line.splitlines()[1] == ("  Pool boxes: its runs WAIT since 2030-01-01T11:58:45+00:00: cannot reach the "
                                    "Docker engine at unix:///x.sock: no socket there")
    mine.stopped()
    assert presence.daemons(store, clock())[0]["unreachable"] == []


def test_documents_of_daemons_gone_for_a_day_are_forgotten(store: Store) -> None:
    clock = Clock()
    written(store, 7, seen=T0 - timedelta(days=1, seconds=1))
    written(store, 8, seen=T0 - timedelta(days=1, seconds=1), stopped=T0 - timedelta(days=2))
    written(store, 9, seen=T0 - timedelta(hours=23))
    store.put_status("spec_status", {"ok": True})  # not a daemon's
    mine = presence.Presence(store, clock, {})
    mine.beat()
    mine.tidy()
    assert sorted(store.list_status("daemon:")) == sorted(["daemon:elsewhere:9", mine.key])
    assert store.get_status("spec_status") == {"ok": True}


def test_a_remote_worker_is_noted_by_its_requests_and_its_pools_by_its_claims(store: Store) -> None:
    clock = Clock()
    roster = presence.WorkerRoster(store, clock)
    roster.seen("remote:gpu-1:42:abcdef")  # any request: alive, no pool known yet
    roster.seen("remote:gpu-1:42:abcdef", "gpu")  # a claim from a new pool: written at once
    clock.now = T0 + timedelta(seconds=5)
    roster.seen("remote:gpu-1:42:abcdef", "gpu")  # within 10 s: not written again
    [worker] = presence.workers(store, clock())
    assert worker == {"worker": "remote:gpu-1:42:abcdef", "pools": ["gpu"], "seenAt": T0.isoformat(),
                      "unreachable": [], "state": "online"}

    restarted = presence.WorkerRoster(store, clock)  # the daemon restarted: its API remembers nothing
    restarted.seen("remote:gpu-1:42:abcdef")
    assert presence.workers(store, clock())[0]["pools"] == ["gpu"]  # kept from the store
    clock.now = T0 + timedelta(seconds=36)  # no request for over 30 s
    assert presence.workers(store, clock())[0]["state"] == "offline"
    assert not presence.serving("gpu", [], presence.workers(store, clock()))


def test_a_remote_workers_outages_stay_on_its_document_until_it_says_they_are_over(store: Store) -> None:
    clock = Clock()
    roster = presence.WorkerRoster(store, clock)
    outage = {"pool": "boxes", "error": "cannot reach the Docker engine", "since": T0.isoformat()}
    roster.seen("remote:h:1:a", "boxes")
    roster.report("remote:h:1:a", [outage])
    clock.now = T0 + timedelta(seconds=11)
    roster.seen("remote:h:1:a")
    assert presence.WorkerRoster(store, clock)._knowledge("remote:h:1:a")[2] == [outage]  # a restarted API knows
    found = presence.workers(store, clock())
    assert [(w["pools"], w["unreachable"], w["state"]) for w in found] == [(["boxes"], [outage], "online")]
    assert list(found[0]) == ["worker", "pools", "seenAt", "unreachable", "state"]  # as GET /api/v1/workers
    roster.report("remote:h:1:a", [])
    assert presence.workers(store, clock())[0]["unreachable"] == []


def test_a_daemon_killed_outright_is_marked_gone_by_the_next_one_on_its_host(store: Store) -> None:
    clock = Clock()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    here = socket.gethostname()
    base = {"paths": ["specs"], "workers": "all", "startedAt": T0.isoformat(), "stoppedAt": None}
    store.put_status("daemon:killed", {**base, "host": here, "pid": int(dead.stdout), "seenAt": T0.isoformat()})
    store.put_status("daemon:alive", {**base, "host": here, "pid": os.getppid(), "seenAt": T0.isoformat()})
    store.put_status("daemon:elsewhere", {**base, "host": "other-host", "pid": 1, "seenAt": T0.isoformat()})
    clock.now = T0 + timedelta(minutes=5)
    successor = presence.Presence(store, clock, {"paths": ["specs"], "workers": "all"})
    successor.beat()
    successor.tidy()
    states = {d["pid"]: d["state"] for d in presence.daemons(store, clock())}
    assert states[int(dead.stdout)] == "gone"  # its pid is no more: killed, then restarted
    assert states[os.getppid()] == "unresponsive"  # still there (frozen?): not for us to say
    assert states[1] == "unresponsive"  # another host's: cannot be looked at from here
    assert states[os.getpid()] == "running"


def _schedules(daemon: DaemonProcess) -> dict[int, str | None]:
    """What ``orchestra status`` says of each running daemon's part in the schedules."""
    shown = json.loads(daemon.cli("status", "-o", "json").stdout)["daemons"]
    return {d["pid"]: d.get("schedules") for d in shown if d["state"] == "running"}


@pytest.mark.timeout(120)
def test_one_daemon_materializes_the_schedules_and_another_takes_over_when_it_is_killed(
        daemon_factory: Callable[..., DaemonProcess]) -> None:
    first = daemon_factory().start()
    first.ready()
    assert first.proc is not None
    wait_for(lambda: _schedules(first).get(first.proc.pid) == "materializes", timeout=20,
             message="the first daemon materializing the schedules")
    second = daemon_factory().start()
    second.ready()
    assert second.proc is not None
    wait_for(lambda: _schedules(second) == {first.proc.pid: "materializes", second.proc.pid: "stands by"},
             timeout=20, message="the second daemon standing by")
    assert "standing by for the schedules (another daemon materializes them)" in second.cli("status").stdout
    first.kill9()
    wait_for(lambda: _schedules(second).get(second.proc.pid) == "materializes", timeout=20,
             message="the second daemon taking over")
    assert _schedules(second) == {first.proc.pid: None, second.proc.pid: "materializes"}  # not two leaders
    assert second.stop() == 0


@pytest.mark.timeout(90)
def test_status_shows_a_daemon_running_stopped_and_gone(daemon_factory: Callable[..., DaemonProcess]) -> None:
    daemon = daemon_factory().start()
    daemon.ready()
    shown = json.loads(daemon.cli("status", "-o", "json").stdout)
    assert shown["specs"]["ok"] is True
    [running] = shown["daemons"]
    assert running["state"] == "running" and running["workers"] == "all"
    assert daemon.proc is not None and running["pid"] == daemon.proc.pid
    text = daemon.cli("status").stdout
    assert f"Daemon {socket.gethostname()}:{daemon.proc.pid} running: watching" in text
    wait_for(lambda: "pools: all; materializing the schedules; started" in daemon.cli("status").stdout,
             timeout=20, message="status saying the daemon materializes the schedules")
    assert daemon.stop() == 0
    [stopped] = json.loads(daemon.cli("status", "-o", "json").stdout)["daemons"]
    assert stopped["state"] == "stopped" and stopped["stoppedAt"]
    assert "stopped at" in daemon.cli("status").stdout

    killed = daemon_factory().start()
    killed.ready()
    assert killed.proc is not None
    killed.kill9()
    successor = daemon_factory().start()
    successor.ready()
    assert successor.proc is not None
    states = {d["pid"]: d["state"] for d in json.loads(successor.cli("status", "-o", "json").stdout)["daemons"]}
    assert states == {daemon.proc.pid: "stopped", killed.proc.pid: "gone", successor.proc.pid: "running"}
    assert f"Daemon {socket.gethostname()}:{killed.proc.pid} gone: it ended without stopping" in \
        successor.cli("status").stdout
    assert successor.stop() == 0


@pytest.mark.timeout(90)
def test_the_health_check_fails_while_the_daemons_loop_hangs(
        api_factory: Callable[..., LiveApi], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "LOOP_STALLED", 0.5)
    hang, hanging = threading.Event(), threading.Event()
    release = threading.Event()

    class HangingWorker:
        """A worker whose pass blocks when told to, as a deadlock in a pass would."""

        def recover(self, now: datetime) -> list[str]:
            return []

        def step(self, now: datetime) -> datetime | None:
            if hang.is_set():
                hanging.set()
                release.wait(30)
            return None

        def shutdown(self, grace: float, now_fn: Callable[[], datetime]) -> None:
            pass

        def unreachable_pools(self, now: datetime) -> list[dict[str, str]]:
            return []

        def rest(self) -> None:
            pass

    specs = tmp_path / "daemon-specs"
    specs.mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'daemon.db'}")
    daemon = Daemon(store, HangingWorker(), DaemonSettings(paths=[specs], watch=False))
    api = api_factory(daemon_loop=daemon.loop_quiet_for)
    health = api.anonymous()
    thread = threading.Thread(target=daemon.serve, daemon=True)
    try:
        assert health.get("/api/v1/health").json()["loopSecondsAgo"] is None  # starting
        thread.start()
        wait_for(lambda: health.get("/api/v1/health").json()["loopSecondsAgo"] is not None,
                 timeout=10, message="the loop's first pass")
        hang.set()
        daemon.wake()  # a full pass, with the worker's step
        assert hanging.wait(10)
        response = wait_for(lambda: (r := health.get("/api/v1/health")).status_code == 503 and r,
                            timeout=10, message="the health check to fail")
        assert "the daemon's loop has not come round for" in response.json()["detail"]
        hang.clear()
        release.set()
        wait_for(lambda: health.get("/api/v1/health").status_code == 200, timeout=10, message="health again")
    finally:
        release.set()
        daemon.stop()
        thread.join(timeout=30)
        store.close()
    assert health.get("/api/v1/health").json()["loopSecondsAgo"] is None  # stopped: a shutdown is not a hang
