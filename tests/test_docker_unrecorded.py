"""A daemon killed between a container's start and the write recording it.

The run is left Pending with no ident, its container running. The next daemon
finds the container by its labels (run id and attempt) and adopts it: the run
becomes Running and is followed to its end, and the attempt is never started a
second time next to it. A container of another attempt, or one made but never
started, is not that attempt's job: it is removed and the run recovered.

Real engine, real containers (``docker_engine``); the "dead daemon" is a
``LocalWorker`` under a worker id whose process is gone, stepped once (claim
and start) and never again, its runner detached as a killed daemon's would be.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from store_fixtures import deployment, new_run, pool
from worker_fixtures import dead_pid

from orchestra.runners.docker import DockerRunner
from orchestra.store import CRASHED, PENDING, RUNNING, SCHEDULED, Run, Store, open_store
from orchestra.workers import LocalWorker, worker_identity
from tests.docker_fixtures import TEST_IMAGE, docker_engine_fixture, docker_labels_fixture, labelled_containers
from tests.docker_fixtures import wait_for as wait_for_engine

__all__ = ["docker_engine_fixture", "docker_labels_fixture"]  # fixtures used by name below

# Long enough to be caught running by the next daemon, short enough to wait for its end.
JOB = ["sh", "-c", "echo begun; sleep 3; echo over"]


class Boxes:
    """A store with a docker pool ``boxes`` and a deployment ``box``, and workers on it."""

    def __init__(self, tmp: Path, engine: Any, labels: dict[str, str]) -> None:
        self.tmp, self.engine, self.labels = tmp, engine, labels
        self.store: Store = open_store(f"sqlite:///{tmp / 'orchestra.db'}")
        self.store.apply_resources([
            pool("boxes", type="docker"),
            deployment("box", "boxes", command=JOB, jobVariables={"image": TEST_IMAGE, "pullPolicy": "never"}),
        ])
        self.runners: list[DockerRunner] = []
        self.woke = threading.Event()

    def runner(self) -> DockerRunner:
        made = DockerRunner(self.tmp, labels=self.labels)
        self.runners.append(made)
        return made

    def worker(self, worker_id: str, runner: DockerRunner | None = None) -> LocalWorker:
        return LocalWorker(self.store, runners={"docker": runner or self.runner()}, worker_id=worker_id,
                           log_dir=self.tmp / "logs", on_change=self.woke.set)

    def run(self, **kw: Any) -> Run:
        return self.store.create_run(new_run("box", datetime.now(UTC), pool="boxes", **kw))

    def started_by_a_dead_daemon(self, run: Run) -> tuple[str, Any]:
        """A worker that claims and starts ``run``'s job, then dies before recording the start."""
        dead = f"local:{socket.gethostname()}:{dead_pid()}:12345"
        runner = self.runner()
        self.worker(dead, runner).step(datetime.now(UTC))
        stored = self.store.get_run(run.id)
        assert (stored.state, stored.worker, stored.runner_ident) == (PENDING, dead, None)
        runner.close()  # the daemon is gone: nothing follows its container any more
        return dead, self.container_of(run)

    def containers_of(self, run: Run) -> list[Any]:
        """The run's containers (this test's, running or not)."""
        return labelled_containers(self.engine, {**self.labels, "orchestra.run-id": run.id})

    def container_of(self, run: Run) -> Any:
        found = self.containers_of(run)
        assert len(found) == 1, found
        return self.engine.containers.get(found[0].id)

    def step_until(self, worker: LocalWorker, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            self.woke.clear()
            worker.step(datetime.now(UTC))
            if done():
                return
            if time.monotonic() > deadline:
                break
            self.woke.wait(0.2)
        pytest.fail("timed out stepping the worker")

    def close(self) -> None:
        for made in self.runners:
            made.close()
        self.store.close()


@pytest.fixture(name="boxes")
def boxes_fixture(tmp_path: Path, docker_engine: Any, docker_labels: dict[str, str]) -> Iterator[Boxes]:
    made = Boxes(tmp_path, docker_engine, docker_labels)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.timeout(120)
def test_a_container_started_but_never_recorded_is_adopted_not_run_again(boxes: Boxes, docker_engine: Any) -> None:
    run = boxes.run(max_attempts=2)
    since = int(time.time()) - 1
    dead, container = boxes.started_by_a_dead_daemon(run)
    assert container.labels["orchestra.attempt"] == "1"
    live = boxes.worker(worker_identity())
    assert live.recover(datetime.now(UTC)) == [run.id]
    adopted = boxes.store.get_run(run.id)
    assert (adopted.state, adopted.attempt, adopted.worker) == (RUNNING, 1, worker_identity())
    assert adopted.runner_ident == f"docker:{container.id}"
    assert adopted.start_time is not None and adopted.start_time <= datetime.now(UTC)
    # its deployment and pool unchanged since the claim: the job it ran is known, and recorded
    assert adopted.job is not None and (adopted.job["image"], adopted.job["command"]) == (TEST_IMAGE, JOB)
    assert container.attrs["Config"]["Image"] == TEST_IMAGE and container.attrs["Config"]["Cmd"] == JOB
    assert any(op["path"] == "/image" for op in adopted.variables_patch or [])
    last = boxes.store.events(run.id)[-1]
    assert (last.from_state, last.to_state) == (PENDING, RUNNING)
    assert last.reason.startswith(f"adopted by {worker_identity()} (worker {dead} gone)")
    assert "started before it was recorded" in last.reason
    boxes.step_until(live, lambda: boxes.store.get_run(run.id).terminal)
    ended = boxes.store.get_run(run.id)
    assert (ended.state, ended.attempt, ended.exit_code) == ("Completed", 1, 0)
    log = (boxes.tmp / "logs" / f"{run.id}.log").read_text()
    assert log.count("begun") == 1 and "over" in log, log
    created = docker_engine.events(since=since, until=int(time.time()) + 1, decode=True, filters={
        "type": "container", "event": "create", "label": f"orchestra.run-id={run.id}"})
    assert len(list(created)) == 1, "the attempt ran in one container"
    wait_for_engine(lambda: boxes.containers_of(run) == [], what="its container removed")


@pytest.mark.timeout(120)
def test_a_job_adopted_after_its_deployment_changed_is_not_guessed(boxes: Boxes) -> None:
    """Rendered again from the changed deployment, the job would not be the one that ran:
    the run is adopted with its job left unknown, as a start never recorded leaves it."""
    run = boxes.run(max_attempts=1)
    boxes.started_by_a_dead_daemon(run)
    boxes.store.apply_resources([deployment("box", "boxes", command=["sh", "-c", "echo changed"],
                                            jobVariables={"image": TEST_IMAGE, "pullPolicy": "never"})])
    live = boxes.worker(worker_identity())
    assert live.recover(datetime.now(UTC)) == [run.id]
    adopted = boxes.store.get_run(run.id)
    assert (adopted.state, adopted.job, adopted.variables_patch) == (RUNNING, None, None)
    boxes.step_until(live, lambda: boxes.store.get_run(run.id).terminal)
    assert "begun" in (boxes.tmp / "logs" / f"{run.id}.log").read_text()  # the job that ran is the old one


@pytest.mark.timeout(120)
def test_an_earlier_attempts_container_is_not_adopted_but_removed(boxes: Boxes) -> None:
    run = boxes.run(max_attempts=3)
    dead, _ = boxes.started_by_a_dead_daemon(run)
    # As an older daemon left it: attempt 1 recovered and retried while its container ran on.
    boxes.store.transition(run.id, SCHEDULED, "crashed; retry 2/3", attempt=2, scheduled_time=datetime.now(UTC))
    boxes.store.claim_runs("boxes", now=datetime.now(UTC), worker=dead, max_count=1)
    live = boxes.worker(worker_identity())
    assert live.recover(datetime.now(UTC)) == [run.id]
    stored = boxes.store.get_run(run.id)
    assert (stored.state, stored.attempt, stored.runner_ident) == (SCHEDULED, 3, None)
    assert stored.state_reason == f"crashed: worker {dead} gone; retry 3/3"
    wait_for_engine(lambda: boxes.containers_of(run) == [], what="attempt 1's container removed")


@pytest.mark.timeout(120)
def test_a_container_made_but_never_started_is_removed_and_the_run_recovered(
        boxes: Boxes, docker_engine: Any) -> None:
    run = boxes.run(max_attempts=1)
    dead = f"local:{socket.gethostname()}:{dead_pid()}:12345"
    boxes.store.claim_runs("boxes", now=datetime.now(UTC), worker=dead, max_count=1)
    docker_engine.containers.create(TEST_IMAGE, ["true"], labels={
        **boxes.labels, "orchestra.managed": "true", "orchestra.run-id": run.id, "orchestra.attempt": "1"})
    live = boxes.worker(worker_identity())
    assert live.recover(datetime.now(UTC)) == [run.id]
    stored = boxes.store.get_run(run.id)
    assert (stored.state, stored.state_reason) == (CRASHED, f"worker {dead} gone")
    assert boxes.containers_of(run) == []
