"""Exceptions grouped by what the caller should do about them.

User mistakes in specs are not exceptions but diagnostics (see
``orchestra.diagnostics``); the one exception that carries them,
``SpecError``, lives there. The classes here are for code paths where a
single field is wrong (``FieldError``, which a caller turns into a
diagnostic by attaching the source position) and for infrastructure.
"""

from __future__ import annotations

from collections.abc import Sequence

PathPart = str | int
Path = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """Render ``("spec", "schedules", 0, "cron")`` as ``spec.schedules[0].cron``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class OrchestraError(Exception):
    """Base of every error orchestra raises on purpose."""


class FieldError(OrchestraError):
    """One field of a resource is wrong.

    ``path`` is relative to whatever object the raising function was given
    (a schedule, a deployment document); callers prefix it with where that
    object sits, then attach the file position.
    """

    def __init__(self, path: Sequence[PathPart], message: str) -> None:
        super().__init__(f"{format_path(path)}: {message}" if path else message)
        self.path: Path = tuple(path)
        self.message = message

    def prefixed(self, prefix: Sequence[PathPart]) -> FieldError:
        return FieldError(tuple(prefix) + self.path, self.message)


class NotFound(OrchestraError):
    """A named resource or run does not exist."""


class Conflict(OrchestraError):
    """The request contradicts the current state (e.g. a run already terminal)."""


class StoreError(OrchestraError):
    """The store cannot be reached or migrated; retrying later may help."""


class InvalidInput(OrchestraError):
    """A request (a manual run, a render) has invalid parameters or job variables."""

    def __init__(self, errors: Sequence[FieldError], what: str = "input") -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{what} {e}" if e.path else str(e) for e in self.errors))
