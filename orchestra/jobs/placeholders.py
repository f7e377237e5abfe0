"""``{{ name }}`` placeholders: syntax, the names that exist, and their values.

Used by ``template`` (a pool's ``jobConfiguration``) and ``command`` (a
deployment's argv). A string that is exactly one placeholder takes the
value with its type; placeholders inside a longer string are interpolated,
non-string values JSON-encoded. Unlike Prefect, which silently drops what
it cannot resolve, every unknown or unresolvable placeholder is an error.

Names: each job variable, ``command``, ``parameters`` and
``parameters.<name>[.<key>...]``, ``run.id``, ``deployment.name``,
``deployment.labels`` and ``deployment.labels.<key>``, ``scheduledTime``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestra.jobs.secret_tokens import json_form, text_form

PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_WHOLE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}\Z", re.DOTALL)
# Segments after the first may start with a digit or hold '/', so that
# parameters named "2x" and labels like "team/owner" are reachable.
_NAME_RE = re.compile(r"[A-Za-z_][\w-]*(?:\.[^\s.{}]+)*\Z")

BUILTIN_ROOTS = ("command", "parameters", "run", "deployment", "scheduledTime")
_EXACT_BUILTINS = ("command", "parameters", "run.id", "deployment.name", "deployment.labels", "scheduledTime")
_PREFIX_BUILTINS = ("parameters.", "deployment.labels.")


class _Missing:
    """A declared variable without a value; its whole-string placeholder drops the key."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Unresolved(Exception):
    """A placeholder cannot be resolved; the message says why, the caller adds where."""


def names_in(text: str) -> list[str]:
    """The stripped contents of every ``{{ ... }}`` in ``text``, in order."""
    return [match.group(1).strip() for match in PLACEHOLDER_RE.finditer(text)]


def whole_name(text: str) -> str | None:
    """The name if ``text`` is exactly one placeholder, else None."""
    match = _WHOLE_RE.match(text)
    return match.group(1) if match else None


def spelled(name: str) -> str:
    return "{{ " + name + " }}"


def syntax_problem(text: str) -> str | None:
    """Why the placeholders of ``text`` are malformed, or None."""
    for name in names_in(text):
        if not _NAME_RE.match(name):
            return f"malformed placeholder {spelled(name)!r}: expected a name such as 'image' or 'parameters.region'"
    if "{{" in PLACEHOLDER_RE.sub("", text):
        return "'{{' without a matching '}}'"
    return None


def is_builtin(name: str) -> bool:
    return name in _EXACT_BUILTINS or any(name.startswith(p) and len(name) > len(p) for p in _PREFIX_BUILTINS)


def unknown_message(name: str, variables: Collection[str], *, command: bool = True) -> str:
    """An "unknown placeholder" message with the closest known name, if any."""
    known = sorted(variables) + [b for b in _EXACT_BUILTINS if command or b != "command"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {spelled(close[0])!r}?" if close else "known: " + ", ".join(known)
    return f"unknown placeholder {spelled(name)!r}; {hint}"


def to_text(value: Any) -> str:
    """How a value reads inside a longer string or argv: strings as-is, the rest as JSON.

    A secret's token (``jobs.secrets``) becomes its text form, so that it
    turns back into the secret's text, not its typed value.
    """
    if isinstance(value, str):
        return text_form(value)
    return to_json(value)


def to_json(value: Any) -> str:
    """Compact JSON; dates (which YAML may produce) as ISO 8601 strings; secret tokens kept exact."""
    return json_form(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True)
class Scope:
    """The values placeholders resolve to for one run."""

    parameters: Mapping[str, Any]
    run_id: str
    deployment_name: str
    labels: Mapping[str, Any]
    scheduled_time: str | None
    variables: Mapping[str, Any] = field(default_factory=dict)
    variable_names: frozenset[str] = frozenset()
    command: list[str] | None = None

    def resolve(self, name: str) -> Any:
        """The value of ``name``, ``MISSING`` for a variable without one; raises Unresolved."""
        if name in self.variable_names:
            return self.variables.get(name, MISSING)
        if name == "command":
            if self.command is None:
                raise Unresolved("the deployment has neither 'command' nor 'entrypoint'")
            return self.command
        return self.resolve_builtin(name)

    def resolve_builtin(self, name: str) -> Any:
        """A built-in other than ``command``: what argv elements may use."""
        simple = {"run.id": self.run_id, "deployment.name": self.deployment_name,
                  "scheduledTime": self.scheduled_time, "deployment.labels": self.labels,
                  "parameters": self.parameters}
        if name in simple:
            return simple[name]
        if name.startswith("deployment.labels.") and len(name) > len("deployment.labels."):
            return _label(self.labels, name[len("deployment.labels."):])
        if name.startswith("parameters.") and len(name) > len("parameters."):
            return _parameter(self.parameters, name[len("parameters."):].split("."))
        # Template placeholders were checked already, so this is an argv one:
        # list only what argv may use.
        raise Unresolved(unknown_message(name, (), command=False))


def _label(labels: Mapping[str, Any], key: str) -> Any:
    if key not in labels:
        raise Unresolved(f"the deployment has no label {key!r}")
    return labels[key]


def _parameter(parameters: Mapping[str, Any], keys: list[str]) -> Any:
    """Walk ``a.b.0`` through nested objects and lists."""
    if keys[0] not in parameters:
        raise Unresolved(f"the run has no parameter {keys[0]!r}")
    value = parameters[keys[0]]
    for depth, key in enumerate(keys[1:], start=1):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise Unresolved(f"parameter {'.'.join(keys[:depth])!r} has no {key!r}")
    return value


def interpolate(text: str, lookup: Any) -> str:
    """``text`` with each placeholder replaced by ``to_text(lookup(name))``."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        value = lookup(name)
        if value is MISSING:
            raise Unresolved(f"job variable {name!r} has no value (no default, or removed with null) "
                             "but is used inside a longer string")
        return to_text(value)

    return PLACEHOLDER_RE.sub(replace, text)
