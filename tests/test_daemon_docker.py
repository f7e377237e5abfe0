"""Docker pools through the real daemon and a real engine: runs, and adoption after kill -9."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixtures import DaemonProcess, daemon_factory, runs_json, wait_for, workdir
from tests.docker_fixtures import DOCKER_POOL as POOL
from tests.docker_fixtures import TEST_IMAGE, docker_engine_fixture

__all__ = ["daemon_factory", "docker_engine_fixture", "workdir"]  # fixtures used by name below

Factory = Callable[..., DaemonProcess]

SLOW = """\
apiVersion: orchestra/v1
kind: Deployment
metadata: {name: slow}
spec:
  pool: boxes
  command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo line $i of $ORCHESTRA_PARAM_WHO; sleep 1; done"]
  parameters: {who: box}
"""


def _remove_containers(engine: Any, run_ids: list[str]) -> None:
    for run_id in run_ids:
        for container in engine.containers.list(all=True, filters={"label": f"orchestra.run-id={run_id}"}):
            with contextlib.suppress(Exception):
                container.remove(force=True)


@pytest.mark.timeout(180)
def test_kill_9_then_adoption_starts_no_new_container(workdir: Path, daemon_factory: Factory,
                                                      docker_engine: Any) -> None:
    (workdir / "specs" / "pool.yaml").write_text(POOL)
    (workdir / "specs" / "slow.yaml").write_text(SLOW)
    first = daemon_factory().start()
    first.ready()
    run_ids = [first.cli("run", "slow").stdout.strip() for _ in range(3)]
    try:
        running = wait_for(lambda: (lambda rs: rs if len(rs) == 3 and all(r["state"] == "Running" for r in rs)
                                    else None)(runs_json(first)), timeout=60, message="three containers running")
        first.kill9()
        before = {r["id"]: json.loads(first.cli("get", "run", r["id"], "-o", "json").stdout)["events"]
                  for r in running}
        assert all(events[-1]["to"] == "Running" for events in before.values())
        second = daemon_factory().start()
        wait_for(lambda: all(r["state"] == "Completed" for r in runs_json(second)), timeout=90,
                 message="all three completed after adoption")
        for run_id in run_ids:
            detail = json.loads(second.cli("get", "run", run_id, "-o", "json").stdout)
            assert detail["attempt"] == 1 and len(before[run_id]) < len(detail["events"])
            assert any("adopted by" in e["reason"] for e in detail["events"]), detail["events"]
            assert not any(e["to"] == "Pending" for e in detail["events"][len(before[run_id]):]), "started again"
            log = second.cli("logs", run_id).stdout
            assert all(f"line {i} of box" in log for i in range(1, 9)), log
            assert log.count("line 1 of box") == 1, "output streamed twice"
        assert second.stop() == 0
    finally:
        _remove_containers(docker_engine, run_ids)


def test_docker_run_through_the_daemon(workdir: Path, daemon_factory: Factory, docker_engine: Any) -> None:
    (workdir / "specs" / "pool.yaml").write_text(POOL)
    (workdir / "specs" / "echo.yaml").write_text(SLOW.replace("slow", "quick").replace(
        "for i in 1 2 3 4 5 6 7 8; do echo line $i of $ORCHESTRA_PARAM_WHO; sleep 1; done",
        "echo hello $ORCHESTRA_PARAM_WHO; exit 3"))
    daemon = daemon_factory().start()
    daemon.ready()
    since = int(time.time()) - 1
    run_id = daemon.cli("run", "quick", "--param", "who=$(reboot)").stdout.strip()
    try:
        wait_for(lambda: runs_json(daemon)[0]["state"] == "Failed", timeout=60, message="container run ended")
        assert runs_json(daemon)[0]["exitCode"] is None or runs_json(daemon)[0]["exitCode"] == 3
        assert "hello $(reboot)" in daemon.cli("logs", run_id).stdout
        created = docker_engine.events(since=since, until=int(time.time()) + 1, decode=True, filters={
            "type": "container", "event": "create", "label": f"orchestra.run-id={run_id}"})
        labels = [event["Actor"]["Attributes"] for event in created]
        assert len(labels) == 1, "one container for the attempt"
        assert (labels[0].get("orchestra.pool"), labels[0].get("orchestra.deployment")) == ("boxes", "quick"), \
            "docker ps --filter label=orchestra.pool=... finds a pool's containers"
    finally:
        _remove_containers(docker_engine, [run_id])


def test_recover_removes_containers_of_finished_runs(tmp_path: Path, docker_engine: Any) -> None:
    """A container whose run ended while no daemon followed it is removed at the next start."""
    from datetime import UTC, datetime

    from orchestra.runners.docker import DockerRunner
    from orchestra.store import NewRun, open_store
    from orchestra.workers.local import LocalWorker, worker_identity

    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    now = datetime.now(UTC)
    run = store.create_run(NewRun(deployment="d", pool="boxes", scheduled_time=now))
    runner = DockerRunner(tmp_path)
    job = {"image": TEST_IMAGE, "command": ["sleep", "60"], "env": {}, "pullPolicy": "never"}
    runner.start(run.id, job, tmp_path / "run.log").detach()
    label = {"label": f"orchestra.run-id={run.id}"}
    try:
        assert len(docker_engine.containers.list(filters=label)) == 1
        store.transition(run.id, "Cancelled", "cancelled while no daemon ran")
        worker = LocalWorker(store, runners={"docker": runner}, worker_id=worker_identity(), log_dir=tmp_path)
        worker.recover(now)
        assert docker_engine.containers.list(all=True, filters=label) == []
    finally:
        _remove_containers(docker_engine, [run.id])
        store.close()
