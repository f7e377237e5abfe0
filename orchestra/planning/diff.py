"""Field-level differences between two JSON documents, for people to read.

Why not ``jsonpatch.make_patch``: it optimises patches for applying (moves,
index shuffles), which reads badly in a plan. Here objects are compared key
by key and lists element by element, so an edited schedule shows as the one
field that changed, with its old and new value, at a JSON Patch path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonpointer import escape

MISSING: Any = object()


@dataclass(frozen=True)
class FieldChange:
    op: str  # add | remove | replace
    path: str  # JSON Patch path, e.g. /spec/schedules/0/cron
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path, "from": self.old, "to": self.new}


def field_diff(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """The changes that turn ``old`` into ``new``; ``MISSING`` stands for absent."""
    if old is MISSING and new is MISSING:
        return []
    if old is MISSING:
        return [FieldChange("add", path or "/", None, new)]
    if new is MISSING:
        return [FieldChange("remove", path or "/", old, None)]
    if isinstance(old, dict) and isinstance(new, dict):
        return _dict_diff(old, new, path)
    if isinstance(old, list) and isinstance(new, list):
        return _list_diff(old, new, path)
    if _same(old, new):
        return []
    return [FieldChange("replace", path or "/", old, new)]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _dict_diff(old: dict[str, Any], new: dict[str, Any], path: str) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for key in list(old) + [k for k in new if k not in old]:
        changes += field_diff(old.get(key, MISSING), new.get(key, MISSING), f"{path}/{escape(str(key))}")
    return changes


def _list_diff(old: list[Any], new: list[Any], path: str) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for index in range(max(len(old), len(new))):
        before = old[index] if index < len(old) else MISSING
        after = new[index] if index < len(new) else MISSING
        changes += field_diff(before, after, f"{path}/{index}")
    return changes


def leaves(value: Any, path: str = "") -> list[FieldChange]:
    """Every leaf of ``value`` as an ``add``: how a created resource is listed."""
    if isinstance(value, dict) and value:
        return [c for k, v in value.items() for c in leaves(v, f"{path}/{escape(str(k))}")]
    if isinstance(value, list) and value:
        return [c for i, v in enumerate(value) for c in leaves(v, f"{path}/{i}")]
    return [FieldChange("add", path or "/", None, value)]
