"""Per-invocation objects the commands share: settings and a lazily opened store."""

from __future__ import annotations

from datetime import datetime, timezone

from orchestra.settings import Settings
from orchestra.store import Store, open_store


class AppContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, opened (and migrated) on first use only: ``validate`` never needs it."""
        if self._store is None:
            self._store = open_store(self.settings.db_url, cwd=self.settings.cwd)
        return self._store

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
