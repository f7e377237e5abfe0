"""``ApiSettings``: what the HTTP API needs to know, built once by its caller.

``orchestra daemon`` builds it from flags and the environment
(``cli.daemon_cmd``); tests build it directly. Frozen, and nothing in the
API reads the environment itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiSettings:
    token: str | None  # None: no authentication (the daemon allows that on loopback only)
    state_dir: Path  # run logs are read from state_dir/logs/<run-id>.log
    spec_paths: tuple[Path, ...] = ()  # what GET /api/v1/plan plans; empty: no plan endpoint data
    prune: bool = True  # plan deletes as the daemon's apply would (its --prune)
    clock: Callable[[], datetime] = field(default=utc_now)
    poll_interval: float = 0.25  # seconds between store polls of the event and log streams
    # In a daemon: seconds since its loop last came round (None while it starts or stops),
    # for the health check. None: an API without a loop to answer for (tests).
    daemon_loop: Callable[[], float | None] | None = None

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"
