"""Secret values: which ones are secret, references to them, and hiding them at every edge.

A value is secret when the schema of its field marks it with the standard
JSON Schema annotations ``writeOnly: true`` or ``format: password`` (what
pydantic's ``SecretStr`` emits), in a deployment's ``parameterSchema`` or a
pool's ``baseJobTemplate.variables``; or when it is a reference,
``{"secretRef": {"env": "NAME"}}`` or ``{"secretRef": {"file": "/path"}}``,
allowed wherever a parameter or job-variable value goes. A reference is
resolved only when a worker launches the job, on that worker's machine, and
its value is never stored.

This module and its two companions are the one place secrets are handled,
used by every edge instead of copies:

- here: the marks (``secret_paths``), references (``SecretRef``,
  ``resolve_ref``) and masking for display (``masked``, ``masked_spec``,
  ``SecretMarks``), used by ``api.shapes``, ``planning`` and
  ``reconcile.export``;
- ``secret_checks``: validation with a placeholder where a reference is,
  and messages that never quote a secret (``specs.parameters``,
  ``jobs.variables``);
- ``secret_tokens``: rendering with a token per secret (``jobs.template``),
  so the job stored on a run carries ``***`` or ``<secret:env:NAME>`` while
  ``RenderedJob.runnable()`` gives the runner the real values, references
  resolved on the worker that launches the job (``workers.rendering``).

Pure, except ``resolve_ref``, which reads what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestra.errors import OrchestraError, Path

MASK = "***"
SENSITIVE = "(sensitive value)"
REF_KEY = "secretRef"
REF_SOURCES = ("env", "file")
# A string the placeholder check of a referenced field sees: a reference
# always resolves to a string (an environment variable, a file's text).
REF_PLACEHOLDER = "<secret>"
_MAX_SCHEMA_DEPTH = 16


class _Any:
    """Any key of an object or any index of a list, in a secret path pattern."""

    def __repr__(self) -> str:
        return "*"


ANY: Any = _Any()
Pattern = tuple[Any, ...]  # str | int | ANY parts


# --- marking: which paths of a value a schema calls secret ------------------------------------------------------


def marks_secret(schema: Any) -> bool:
    """``writeOnly: true`` or ``format: password``: the JSON Schema ways of saying "do not show"."""
    return isinstance(schema, dict) and (schema.get("writeOnly") is True or schema.get("format") == "password")


def secret_paths(schema: Any) -> tuple[Pattern, ...]:
    """The paths (with ``ANY`` for map values and list items) a schema marks secret.

    Follows ``properties``, ``additionalProperties``, ``patternProperties``,
    ``items``, ``allOf``/``anyOf``/``oneOf`` and local ``$ref``s (pydantic
    puts nested models in ``$defs``). Over-approximates on purpose: hiding
    a value that is not secret is harmless, showing one that is is not.
    """
    found: list[Pattern] = []
    if isinstance(schema, dict):
        _walk_schema(schema, schema, (), 0, found)
    return tuple(dict.fromkeys(found))


def _walk_schema(schema: Any, root: dict[str, Any], prefix: Pattern, depth: int, found: list[Pattern]) -> None:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    if marks_secret(schema):
        found.append(prefix)
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        _walk_schema(_local_ref(root, reference), root, prefix, depth + 1, found)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in _list(schema.get(key)):
            _walk_schema(sub, root, prefix, depth + 1, found)
    properties = schema.get("properties")
    for name, sub in (properties.items() if isinstance(properties, dict) else ()):
        _walk_schema(sub, root, (*prefix, name), depth + 1, found)
    patterns = schema.get("patternProperties")
    for sub in [schema.get("additionalProperties"), *(patterns.values() if isinstance(patterns, dict) else ())]:
        _walk_schema(sub, root, (*prefix, ANY), depth + 1, found)
    items = schema.get("items")
    if isinstance(items, list):
        for index, sub in enumerate(items):
            _walk_schema(sub, root, (*prefix, index), depth + 1, found)
    else:
        _walk_schema(items, root, (*prefix, ANY), depth + 1, found)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _local_ref(root: dict[str, Any], reference: str) -> Any:
    """``#/$defs/Name`` within the same schema; other references are not followed."""
    if not reference.startswith("#/"):
        return None
    node: Any = root
    for part in reference[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node


def is_secret_path(path: Path, patterns: tuple[Pattern, ...]) -> bool:
    """Whether ``path`` is at or below one of the secret ``patterns``."""
    return any(covers(pattern, path) for pattern in patterns)


def covers(pattern: Pattern, path: Path) -> bool:
    if len(pattern) > len(path):
        return False
    return all(part is ANY or str(part) == str(actual) for part, actual in zip(pattern, path, strict=False))


def values_at(value: Any, patterns: tuple[Pattern, ...]) -> Iterator[tuple[Path, Any]]:
    """Each ``(path, value)`` of ``value`` that a pattern names (patterns that match nothing give nothing)."""
    for pattern in patterns:
        yield from _values_at(value, pattern, ())


def _values_at(value: Any, pattern: Pattern, path: Path) -> Iterator[tuple[Path, Any]]:
    if not pattern:
        yield path, value
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(value, dict):
        keys = list(value) if head is ANY else [head] if head in value else []
        for key in keys:
            yield from _values_at(value[key], rest, (*path, key))
    elif isinstance(value, list):
        indexes = range(len(value)) if head is ANY else [head] if isinstance(head, int) and head < len(value) else []
        for index in indexes:
            yield from _values_at(value[index], rest, (*path, index))


# --- references -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """Where a secret's value is read at launch: an environment variable or a file of the worker."""

    source: str  # env | file
    name: str

    @property
    def label(self) -> str:
        """How the reference shows in a stored or printed job; names the place, never the value."""
        return f"<secret:{self.source}:{self.name}>"


def is_ref_shaped(value: Any) -> bool:
    """A mapping with a ``secretRef`` key: meant as a reference, well formed or not."""
    return isinstance(value, dict) and REF_KEY in value


def as_ref(value: Any) -> SecretRef | None:
    """The reference ``value`` is, or None when it is not a well-formed one."""
    if not is_ref_shaped(value) or ref_problem(value):
        return None
    ((source, name),) = value[REF_KEY].items()
    return SecretRef(source, name)


def ref_problem(value: dict[str, Any]) -> str | None:
    """What is wrong with a ``{"secretRef": ...}`` mapping, in plain words, or None."""
    body = value[REF_KEY]
    if len(value) != 1:
        return f"a secretRef stands alone; remove {', '.join(repr(k) for k in value if k != REF_KEY)}"
    if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in REF_SOURCES:
        return 'secretRef takes exactly one of {"env": "NAME"} or {"file": "/absolute/path"}'
    ((source, name),) = body.items()
    if not isinstance(name, str) or not name:
        return f"secretRef.{source} must be a non-empty string"
    if source == "env" and ("=" in name or "\0" in name):
        return f"secretRef.env {name!r} is not a valid environment variable name"
    if source == "file" and not name.startswith("/"):
        return f"secretRef.file {name!r} must be an absolute path (it is read on the worker's machine)"
    return None


def find_refs(value: Any, path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every ``{"secretRef": ...}`` mapping in ``value`` with its path (nothing inside one is searched)."""
    if is_ref_shaped(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from find_refs(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_refs(item, (*path, index))


class SecretUnavailable(OrchestraError):
    """A reference cannot be resolved on this machine; the message names the reference, not a value."""


def resolve_ref(ref: SecretRef, environ: Mapping[str, str], read_file: Callable[[str], str]) -> str:
    """The value behind ``ref``: the variable's value, or the file's text without one trailing newline."""
    if ref.source == "env":
        if ref.name not in environ:
            raise SecretUnavailable(f"{ref.label}: the environment variable {ref.name} is not set on this worker")
        return environ[ref.name]
    try:
        text = read_file(ref.name)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretUnavailable(f"{ref.label}: cannot read the file on this worker ({reason})") from None
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def has_ref(value: Any) -> bool:
    """Whether ``value`` holds a ``{"secretRef": ...}`` mapping anywhere."""
    if isinstance(value, dict):
        return REF_KEY in value or any(has_ref(item) for item in value.values())
    if isinstance(value, list):
        return any(has_ref(item) for item in value)
    return False


# --- display: a value as it may leave the server ------------------------------------------------------------------


def masked(value: Any, patterns: tuple[Pattern, ...], *, refs_as_labels: bool = False, mask: str = MASK) -> Any:
    """``value`` with what the patterns mark replaced by ``***``; nothing else is copied.

    References are not secrets (they name a place, not a value): they stay
    as given, or become their label (``<secret:env:NAME>``) where a rendered
    value is shown.
    """
    if refs_as_labels and is_ref_shaped(value):
        ref = as_ref(value)
        return ref.label if ref else MASK
    if not patterns and not refs_as_labels:
        return value
    if () in patterns:
        return _mask_leaves(value, refs_as_labels, mask)
    return _masked(value, patterns, (), refs_as_labels, mask)


def _masked(value: Any, patterns: tuple[Pattern, ...], path: Path, labels: bool, mask: str) -> Any:
    if is_ref_shaped(value):
        ref = as_ref(value)
        return (ref.label if ref else mask) if labels else value
    if any(len(p) == len(path) and covers(p, path) for p in patterns):
        return _mask_leaves(value, labels, mask)
    if isinstance(value, dict):
        return {key: _masked(item, patterns, (*path, key), labels, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, patterns, (*path, index), labels, mask) for index, item in enumerate(value)]
    return value


def _mask_leaves(value: Any, labels: bool, mask: str) -> Any:
    """A secret value's shape kept (so a masked object still shows its keys), its leaves hidden."""
    if is_ref_shaped(value):
        ref = as_ref(value)
        return (ref.label if ref else mask) if labels else value
    if isinstance(value, dict):
        return {key: _mask_leaves(item, labels, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(item, labels, mask) for item in value]
    return None if value is None else mask


def under(patterns: tuple[Pattern, ...], prefix: Path) -> tuple[Pattern, ...]:
    """The patterns as seen from the value at ``prefix`` (those that reach below it)."""
    return tuple(p[len(prefix):] for p in patterns if len(p) >= len(prefix) and covers(p[:len(prefix)], prefix))


# --- what of a resource spec is secret ------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretMarks:
    """The secret paths of a run's parameters and job variables (from its deployment and pool)."""

    parameters: tuple[Pattern, ...] = ()
    variables: tuple[Pattern, ...] = ()

    def run_values(self, parameters: Any, job_variables: Any) -> tuple[Any, Any]:
        """A run's given parameters and job variables as they may be shown."""
        return masked(parameters, self.parameters), masked(job_variables, self.variables)


HIDE_ALL = SecretMarks(((),), ((),))  # for a run whose deployment is gone: nothing tells what is secret


def spec_secret_paths(kind: str, spec: Any) -> tuple[Pattern, ...]:
    """Where a resource's spec holds secret values: parameters and defaults its own schemas mark.

    A deployment's ``jobVariables`` are marked by its pool's schema, which
    the spec alone does not tell: pass that schema as ``variables_schema``
    to ``deployment_secret_paths`` when the pool is at hand.
    """
    if not isinstance(spec, dict):
        return ()
    if kind == "Deployment":
        return deployment_secret_paths(spec, None)
    if kind == "WorkPool":
        template = spec.get("baseJobTemplate")
        variables = template.get("variables") if isinstance(template, dict) else None
        return tuple((*("baseJobTemplate", "variables"), *p) for p in _schema_value_paths(variables))
    return ()


def masked_spec(kind: str, spec: Any, pool_spec: Any = None) -> Any:
    """A resource's spec as it may be shown: the values its schemas mark secret as ``***``.

    For a deployment, ``pool_spec`` (its pool's) tells which of its
    ``jobVariables`` are secret; a pool without ``baseJobTemplate`` uses a
    default template, which marks none.
    """
    if kind == "Deployment" and isinstance(spec, dict) and isinstance(pool_spec, dict):
        template = pool_spec.get("baseJobTemplate")
        variables = template.get("variables") if isinstance(template, dict) else None
        return masked(spec, deployment_secret_paths(spec, variables))
    return masked(spec, spec_secret_paths(kind, spec))


def deployment_secret_paths(spec: dict[str, Any], variables_schema: Any) -> tuple[Pattern, ...]:
    """The secret paths of a deployment spec, its ``jobVariables`` too when the pool's schema is given."""
    parameter_schema = spec.get("parameterSchema")
    marked = secret_paths(parameter_schema)
    paths = [("parameters", *p) for p in marked] + [("schedules", ANY, "parameters", *p) for p in marked]
    paths += [("parameterSchema", *p) for p in _schema_value_paths(parameter_schema)]
    paths += [("jobVariables", *p) for p in secret_paths(variables_schema)]
    return tuple(paths)


def _schema_value_paths(schema: Any) -> list[Pattern]:
    """Where a schema itself holds secret values: the ``default`` (and ``examples``) of what it marks."""
    found: list[Pattern] = []
    _walk_defaults(schema, (), 0, found)
    for name, sub in ((schema.get("properties") or {}).items() if isinstance(schema, dict) else ()):
        for path in secret_paths(sub) if isinstance(sub, dict) and not marks_secret(sub) else ():
            found.append(("properties", name, "default", *path))
    return found


def _walk_defaults(schema: Any, location: Pattern, depth: int, found: list[Pattern]) -> None:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    if marks_secret(schema):
        found.extend([(*location, "default"), (*location, "examples"), (*location, "enum"), (*location, "const")])
        return
    for key, sub in schema.items():
        if isinstance(sub, dict) and key in ("properties", "patternProperties", "$defs", "definitions"):
            for name, item in sub.items():
                _walk_defaults(item, (*location, key, name), depth + 1, found)
        elif isinstance(sub, dict) and key in ("additionalProperties", "items", "not"):
            _walk_defaults(sub, (*location, key), depth + 1, found)
        elif isinstance(sub, list) and key in ("allOf", "anyOf", "oneOf", "items"):
            for index, item in enumerate(sub):
                _walk_defaults(item, (*location, key, index), depth + 1, found)
