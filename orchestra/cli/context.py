"""Per-invocation objects the commands share: settings, and the backend they call.

The backend is opened on first use only (``validate`` never needs one):
the local store under ``--db``, or the daemon at ``--api-url``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from orchestra.cli.backends import Backend, LocalBackend
from orchestra.errors import OrchestraError
from orchestra.settings import Settings
from orchestra.store import Store, open_store


@dataclass(frozen=True)
class RemoteSettings:
    """Where the daemon's API is, and the bearer token it wants (None: an open API on loopback)."""

    url: str
    token: str | None


class RemoteNotSupported(OrchestraError):
    """A command that works on the store itself was asked to go through the API."""


class AppContext:
    def __init__(self, settings: Settings, remote: RemoteSettings | None = None) -> None:
        self.settings = settings
        self.remote = remote
        self._store: Store | None = None
        self._backend: Backend | None = None

    @property
    def store(self) -> Store:
        """The store, opened (and migrated) on first use only; never behind ``--api-url``."""
        if self.remote is not None:
            raise RemoteNotSupported(f"this command works on the store itself and cannot run through the API at "
                                     f"{self.remote.url}; unset --api-url / ORCHESTRA_API_URL and give --db")
        if self._store is None:
            self._store = open_store(self.settings.db_url, cwd=self.settings.cwd)
        return self._store

    @property
    def backend(self) -> Backend:
        """What the commands call: the daemon's API with ``--api-url``, else the local store."""
        if self._backend is None:
            self._backend = self._remote_backend() if self.remote else LocalBackend(self.store, self.log_dir)
        return self._backend

    @property
    def log_dir(self) -> Path:
        """Where the local store's runs write their logs."""
        return self.settings.state_dir / "logs"

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def close(self) -> None:
        if self._backend is not None and self.remote is not None:
            self._backend.close()
        if self._store is not None:
            self._store.close()

    def _remote_backend(self) -> Backend:
        from orchestra.cli.remote_backend import RemoteBackend  # HTTP only when asked for
        from orchestra.client import ApiClient

        assert self.remote is not None
        return RemoteBackend(ApiClient(self.remote.url, self.remote.token))
