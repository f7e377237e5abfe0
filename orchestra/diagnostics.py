"""Diagnostics: user mistakes reported with their source position.

Validation collects every problem of every file into a list of
``Diagnostic`` and never stops at the first; the CLI prints them as
``file:line:col: Kind/name: spec.path: message`` and the API will map them
to 422 responses. ``SpecError`` carries such a list across layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestra.errors import OrchestraError


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    column: int
    resource: str | None
    path: str | None
    message: str
    hint: str | None = field(default=None, compare=False)
    severity: str = field(default="error", compare=False)

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}:{self.column}"]
        if self.resource:
            parts.append(self.resource)
        if self.path:
            parts.append(self.path)
        text = ": ".join(parts) + ": " + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "resource": self.resource,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
        }


class SpecError(OrchestraError):
    """Specs are invalid; nothing was changed."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
