"""Resources: spec documents that passed the envelope checks.

A ``Resource`` is what every later layer works with: planning compares it
with the store, validation checks its references, the scheduler reads its
schedules. It keeps the document it came from so that any error about it,
however late, can point at the file, line and column of the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from orchestra.diagnostics import Diagnostic
from orchestra.errors import FieldError, Path, format_path
from orchestra.specs.loader import Document

API_VERSION = "orchestra/v1"


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    metadata: dict[str, Any]
    spec: dict[str, Any]
    document: Document

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def file(self) -> str:
        return self.document.file

    @property
    def line(self) -> int:
        return self.document.position(())[0]

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"

    def body(self) -> dict[str, Any]:
        """The part of the resource that is compared and stored (not apiVersion/kind)."""
        return {"metadata": self.metadata, "spec": self.spec}

    def as_document(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind, **self.body()}

    @cached_property
    def content_hash(self) -> str:
        """Computed once: planning and the unchanged-resource check both ask for it."""
        return content_hash(self.metadata, self.spec)

    def diagnostic(self, error: FieldError) -> Diagnostic:
        """Turn an error about one of this resource's fields into a positioned diagnostic."""
        return diagnostic_at(self.document, error.path, error.message, self.ref)


def content_hash(metadata: dict[str, Any], spec: dict[str, Any]) -> str:
    canonical = json.dumps({"metadata": metadata, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def diagnostic_at(document: Document, path: Path, message: str, resource: str | None) -> Diagnostic:
    line, column = document.position(tuple(path))
    return Diagnostic(document.file, line, column, resource, format_path(path) or None, message)


def resource_label(value: Any) -> str | None:
    """``Kind/name`` of a raw document if it has both, for error messages."""
    if not isinstance(value, dict):
        return None
    kind, metadata = value.get("kind"), value.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(kind, str) and isinstance(name, str):
        return f"{kind}/{name}"
    return kind if isinstance(kind, str) else None


def to_resource(document: Document) -> Resource:
    """Build a Resource from a document that has passed its kind's schema."""
    value = document.value
    return Resource(
        kind=value["kind"],
        name=value["metadata"]["name"],
        metadata=value["metadata"],
        spec=value["spec"],
        document=document,
    )
