"""Settings built once at start (from flags and environment) and passed down.

Nothing reads the environment at import time; the CLI builds a ``Settings``
and hands it to the services it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DB_DIR = ".orchestra"


@dataclass(frozen=True)
class Settings:
    db_url: str | None  # None: SQLite under .orchestra/ in cwd
    cwd: Path

    @property
    def state_dir(self) -> Path:
        return self.cwd / DEFAULT_DB_DIR
