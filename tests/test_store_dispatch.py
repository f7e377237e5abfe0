"""The pure dispatch rule book: which reason wins, and how admitted runs count."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestra.store import Run, StoredResource
from orchestra.store.dispatch import Dispatch, QueueView

T = datetime(2030, 1, 1, tzinfo=UTC)
RUN = Run(
    id="a" * 32, deployment="etl", pool="local", queue="default", idempotency_key=None,
    schedule_identity=None, slot_time=None, trigger="manual", state="Scheduled", state_reason="",
    attempt=1, max_attempts=1, retry_delay_seconds=0, timeout_seconds=None, parameters={},
    job_variables={}, variables_patch=None, job=None, worker=None, lease_expires_at=None,
    runner_ident=None, exit_code=None, scheduled_time=T, created_at=T, start_time=None, end_time=None,
)


def resource(kind: str, name: str, spec: dict[str, Any], override: bool | None = None) -> StoredResource:
    return StoredResource(kind, name, {"name": name}, spec, None, None, "h", 1, "specs", override,
                          T, T)


def dispatch(pool_spec: dict[str, Any] | None, queue: QueueView | None, deployment_spec: dict[str, Any] | None,
             active: dict[tuple[str, str, str], int] | None = None) -> Dispatch:
    queues = {"default": QueueView("default", math.inf, None, False)}
    if queue:
        queues[queue.name] = queue
    d = Dispatch("local", None if pool_spec is None else resource("WorkPool", "local", pool_spec), queues, active or {})
    d.deployments["etl"] = None if deployment_spec is None else resource("Deployment", "etl", deployment_spec)
    return d


CRITICAL = QueueView("critical", 1, 1, False)
CASES = [
    # (pool spec, queue, deployment spec, active runs, run's queue, reason)
    ({}, None, {}, {}, "default", None),
    (None, None, {}, {}, "default", "pool 'local' does not exist"),
    ({"paused": True}, None, None, {}, "default", "pool paused"),
    ({}, None, {}, {}, "gone", "queue 'gone' does not exist in pool 'local'"),
    ({}, replace(CRITICAL, paused=True), {}, {}, "critical", "queue 'critical' paused"),
    ({}, None, None, {}, "default", "deployment 'etl' does not exist"),
    ({}, None, {"paused": True}, {}, "default", "deployment 'etl' paused"),
    ({"concurrencyLimit": 1}, None, {}, {("local", "x", "other"): 1}, "default", "pool limit 1 reached"),
    ({}, CRITICAL, {}, {("local", "critical", "other"): 1}, "critical", "queue limit 1 reached"),
    ({}, None, {"concurrency": {"limit": 2}}, {("docker", "default", "etl"): 2}, "default", "deployment concurrency 2"),
    # Standing reasons beat a lack of room: waiting will not clear them.
    ({"concurrencyLimit": 1}, None, {"paused": True}, {("local", "x", "y"): 1}, "default", "deployment 'etl' paused"),
    # Other pools' runs do not count against this pool or its queues.
    ({"concurrencyLimit": 1}, CRITICAL, {}, {("docker", "critical", "y"): 5}, "critical", None),
]


@pytest.mark.parametrize(("pool_spec", "queue", "deployment_spec", "active", "run_queue", "reason"), CASES)
def test_reasons(pool_spec: Any, queue: Any, deployment_spec: Any, active: Any, run_queue: str, reason: Any) -> None:
    decide = dispatch(pool_spec, queue, deployment_spec, active)
    assert decide.admit(replace(RUN, queue=run_queue)) == reason


def test_admitted_runs_take_room() -> None:
    decide = dispatch({"concurrencyLimit": 3}, CRITICAL, {"concurrency": {"limit": 2}})
    outcomes = [decide.admit(replace(RUN, queue=q)) for q in ("critical", "critical", "default", "default")]
    assert outcomes == [None, "queue limit 1 reached", None, "deployment concurrency 2"]
    assert decide.pool_block() is None
    assert decide.blocked_deployments() == ["etl"]


def test_queue_groups_merge_equal_priorities_and_default_comes_last() -> None:
    decide = dispatch({}, None, {})
    decide.queues |= {"b": QueueView("b", 5, None, False), "a": QueueView("a", 5, None, False),
                      "top": QueueView("top", 0, None, False)}
    assert decide.queue_groups() == [["top"], ["a", "b"], ["default"]]
