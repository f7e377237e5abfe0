"""Dispatch decisions: does a due run have room to start, and if not, why.

Pure: ``Dispatch`` is given the pool, its queues, the deployments and the
active-run counts, and answers run by run in dispatch order, counting each
run it admits. ``claim.py`` feeds it from the database, for both claiming and
explaining, so both follow one rule book. No I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field

from orchestra.store.models import Run, StoredResource, effective_paused

DEFAULT_QUEUE = "default"
READY = "ready; waiting for a worker to claim it"
PUT_BACK = "not started: "  # the reason of a run a worker claimed and put back, its attempt unspent


@dataclass(frozen=True)
class QueueView:
    name: str
    priority: float
    limit: int | None
    paused: bool


@dataclass
class Dispatch:
    """Room accounting for one pool during one claim or explanation. Pure: it
    is given the stored state and decides; it performs no I/O."""

    pool: str
    pool_resource: StoredResource | None
    queues: dict[str, QueueView]
    active: InitVar[Mapping[tuple[str, str, str], int]]  # (pool, queue, deployment) -> active runs
    # Deployments by name as they are met; None if it does not exist. Filled by the caller.
    deployments: dict[str, StoredResource | None] = field(default_factory=dict)
    _pool_count: int = field(init=False, default=0)
    _queue_counts: Counter[str] = field(init=False, default_factory=Counter)
    _deployment_counts: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self, active: Mapping[tuple[str, str, str], int]) -> None:
        for (pool, queue, deployment), count in active.items():
            self._deployment_counts[deployment] += count
            if pool == self.pool:
                self._pool_count += count
                self._queue_counts[queue] += count

    def queue_groups(self) -> list[list[str]]:
        """Queue names grouped by equal priority, best group first."""
        groups: dict[float, list[str]] = {}
        for queue in sorted(self.queues.values(), key=lambda q: (q.priority, q.name)):
            groups.setdefault(queue.priority, []).append(queue.name)
        return list(groups.values())

    def missing_deployments(self, names: Sequence[str]) -> list[str]:
        return sorted({n for n in names if n not in self.deployments})

    # Each of pool, queue and deployment can block for a standing reason (it does
    # not exist, it is paused) or for want of room. ``admit`` reports standing
    # reasons first: they will not clear by waiting, so they are the news.

    def pool_block(self) -> str | None:
        """Why nothing in the pool can start now, or None."""
        return self._pool_standing() or self._pool_full()

    def queue_block(self, name: str) -> str | None:
        return self._queue_standing(name) or self._queue_full(name)

    def deployment_block(self, name: str) -> str | None:
        return self._deployment_standing(name) or self._deployment_full(name)

    def admit(self, run: Run) -> str | None:
        """The reason ``run`` must wait, or None after counting it as started."""
        reason = (
            self._pool_standing() or self._queue_standing(run.queue)
            or self._deployment_standing(run.deployment) or self._pool_full()
            or self._queue_full(run.queue) or self._deployment_full(run.deployment)
        )
        if reason is None:
            self._pool_count += 1
            self._queue_counts[run.queue] += 1
            self._deployment_counts[run.deployment] += 1
        return reason

    def _pool_standing(self) -> str | None:
        if self.pool_resource is None:
            return f"pool {self.pool!r} does not exist"
        if effective_paused(self.pool_resource.spec, self.pool_resource.paused_override):
            return "pool paused"
        return None

    def _pool_full(self) -> str | None:
        limit = self.pool_resource.spec.get("concurrencyLimit") if self.pool_resource else None
        if limit is not None and self._pool_count >= limit:
            return f"pool limit {limit} reached"
        return None

    def _queue_standing(self, name: str) -> str | None:
        queue = self.queues.get(name)
        if queue is None:
            return f"queue {name!r} does not exist in pool {self.pool!r}"
        return f"queue {name!r} paused" if queue.paused else None

    def _queue_full(self, name: str) -> str | None:
        queue = self.queues.get(name)
        if queue and queue.limit is not None and self._queue_counts[name] >= queue.limit:
            return f"queue limit {queue.limit} reached"
        return None

    def _deployment_standing(self, name: str) -> str | None:
        resource = self.deployments.get(name)
        if resource is None:
            return f"deployment {name!r} does not exist"
        if effective_paused(resource.spec, resource.paused_override):
            return f"deployment {name!r} paused"
        return None

    def _deployment_full(self, name: str) -> str | None:
        resource = self.deployments.get(name)
        limit = (resource.spec.get("concurrency") or {}).get("limit") if resource else None
        if limit is not None and self._deployment_counts[name] >= limit:
            return f"deployment concurrency {limit}"
        return None

    def blocked_deployments(self) -> list[str]:
        return sorted(n for n in self.deployments if self.deployment_block(n))
