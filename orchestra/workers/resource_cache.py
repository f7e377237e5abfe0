"""The pools and deployments a worker needs on every pass, re-read only when one changed.

``LocalWorker`` asks on every pass which pools exist (to serve them) and, for
every run it starts, for the run's deployment and pool (to render its job).
Reading them from the store each time cost two queries per run. Instead the
worker calls ``refresh`` once per pass, which compares the store's resource
marker (one primary-key read; it changes with every apply and pause
override) with the one the cached values were read under, and drops them
all when it moved. The marker is read before the resources, so a change
that lands in between is at worst seen one pass late, never missed. A claim
that read the marker in its own transaction hands it over (``adopt``) with
the deployments of its runs, which spares the next pass its ``refresh``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orchestra.errors import NotFound
from orchestra.store import Store, StoredResource


class ResourceCache:
    """Pools and deployments as stored at the last ``refresh``; not thread-safe
    (the worker's loop thread is its only user)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._marker: int | None = None
        self._pools: dict[str, StoredResource] | None = None
        self._deployments: dict[str, StoredResource | None] = {}

    def refresh(self) -> None:
        """Forget everything if any resource changed since it was read."""
        marker = self._store.resource_marker()
        if marker != self._marker:
            self._marker = marker
            self._pools = None
            self._deployments = {}

    def pools(self) -> list[StoredResource]:
        """Every pool, by name."""
        return list(self._pool_map().values())

    def pool(self, name: str) -> StoredResource:
        found = self._pool_map().get(name)
        if found is None:
            raise NotFound(f"WorkPool/{name} not found")
        return found

    def deployment(self, name: str) -> StoredResource:
        if name not in self._deployments:
            self.prefetch([name])
        found = self._deployments[name]
        if found is None:
            raise NotFound(f"Deployment/{name} not found")
        return found

    def adopt(self, marker: int, deployments: Mapping[str, StoredResource | None]) -> None:
        """Take the marker and deployments a store write read in its own transaction
        (a claim hands over its runs' deployments): if the marker moved, everything
        else is forgotten, as ``refresh`` would. Rendering the claimed runs then
        reads nothing, and this counts as a refresh: the marker is as recent."""
        if marker != self._marker:
            self._marker = marker
            self._pools = None
            self._deployments = {}
        self._deployments.update(deployments)

    def prefetch(self, deployments: Iterable[str]) -> None:
        """Read the deployments not yet known (one query) and the pools, so that
        rendering the jobs of a claim touches the store no more."""
        missing = {name for name in deployments if name not in self._deployments}
        if missing:
            found = self._store.get_resources("Deployment", missing)
            self._deployments.update({name: found.get(name) for name in missing})
        self._pool_map()

    def _pool_map(self) -> dict[str, StoredResource]:
        if self._pools is None:
            self._pools = {pool.name: pool for pool in self._store.list_resources("WorkPool")}
        return self._pools
