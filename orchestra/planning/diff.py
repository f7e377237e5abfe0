"""Field-level differences between two JSON documents, for people to read.

Why not ``jsonpatch.make_patch``: it optimises patches for applying (moves,
index shuffles), which reads badly in a plan. Here objects are compared key
by key and lists element by element, so an edited schedule shows as the one
field that changed, with its old and new value, at a JSON Patch path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from jsonpointer import escape

from orchestra.jobs.secrets import (
    SENSITIVE,
    Pattern,
    deployment_secret_paths,
    is_secret_path,
    masked,
    spec_secret_paths,
    under,
)

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


def unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def leaves(value: Any, path: str = "") -> list[FieldChange]:
    """Every leaf of ``value`` as an ``add``: how a created resource is listed."""
    if isinstance(value, dict) and value:
        return [c for k, v in value.items() for c in leaves(v, f"{path}/{escape(str(k))}")]
    if isinstance(value, list) and value:
        return [c for i, v in enumerate(value) for c in leaves(v, f"{path}/{i}")]
    return [FieldChange("add", path or "/", None, value)]


# --- secrets: "(sensitive value)", as Terraform shows them ---------------------------------------------------


def hide_secret_values(changes: list[FieldChange], patterns: tuple[Pattern, ...]) -> list[FieldChange]:
    """``changes`` of one resource body with the values its schemas mark secret shown as ``(sensitive value)``.

    ``patterns`` are paths within the body (``("spec", "parameters", "password")``,
    from ``jobs.secrets``). A change at or below a secret path hides its old
    and new values whole; a change above one (a whole ``parameters`` object
    added) hides the secret parts inside its values. Both sides are hidden,
    so a plan never tells the old secret either.
    """
    if not patterns:
        return changes
    return [_hidden(change, patterns) for change in changes]


def _hidden(change: FieldChange, patterns: tuple[Pattern, ...]) -> FieldChange:
    path = tuple(unescape(part) for part in change.path.split("/")[1:]) if change.path != "/" else ()
    if is_secret_path(path, patterns):
        return replace(change, old=None if change.old is None else SENSITIVE,
                       new=None if change.new is None else SENSITIVE)
    inner = under(patterns, path)
    if not inner:
        return change
    return replace(change, old=masked(change.old, inner, mask=SENSITIVE), new=masked(change.new, inner, mask=SENSITIVE))


def body_secret_paths(kind: str, *specs: Any, variables_schema: Any = None) -> tuple[Pattern, ...]:
    """Secret paths within ``{"metadata", "spec"}`` bodies of a resource, for any of its ``specs`` (old, new)."""
    found: list[Pattern] = []
    for spec in specs:
        if kind == "Deployment" and isinstance(spec, dict):
            found += deployment_secret_paths(spec, variables_schema)
        else:
            found += spec_secret_paths(kind, spec)
    return tuple(("spec", *path) for path in dict.fromkeys(found))


def hide_plan_secrets(changes: list[Any], desired: Sequence[Any], stored: Sequence[Any]) -> list[Any]:
    """Plan changes (``plan.Change``) with secret values hidden in their diffs.

    The secret paths of a resource come from both its desired and its stored
    spec (a value secret before or after is hidden), and for a deployment's
    ``jobVariables`` from its pool's variables schema (desired, else stored).
    """
    old = {(s.kind, s.name): s.spec for s in stored}
    new = {(r.kind, r.name): r.spec for r in desired}
    pools = {**{name: spec for (kind, name), spec in old.items() if kind == "WorkPool"},
             **{name: spec for (kind, name), spec in new.items() if kind == "WorkPool"}}
    result = []
    for change in changes:
        specs = [spec for spec in (old.get((change.kind, change.name)), new.get((change.kind, change.name))) if spec]
        patterns = body_secret_paths(change.kind, *specs, variables_schema=_variables_schema(specs, pools))
        result.append(replace(change, diff=hide_secret_values(change.diff, patterns)) if patterns else change)
    return result


def _variables_schema(specs: list[Any], pools: dict[str, Any]) -> Any:
    pool = next((pools.get(spec.get("pool")) for spec in specs if isinstance(spec, dict) and spec.get("pool")), None)
    template = pool.get("baseJobTemplate") if isinstance(pool, dict) else None
    return template.get("variables") if isinstance(template, dict) else None
