"""Validating values that hold secrets: references checked with a placeholder, no secret in a message.

Called by ``specs.parameters`` (parameters against their schema),
``jobs.variables`` (job variables against the pool's schema) and
``jobs.template`` (a pool's defaults). A ``secretRef`` is checked for its
shape, and for its type with a string in its place (a reference always
gives a string); constraints that need the value wait for launch. A value
that a schema marks secret is never quoted in a message, nor is it when a
message quotes the object around it. Pure; the marks and references are
``jobs.secrets``'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError

from orchestra.errors import FieldError, Path
from orchestra.jobs.secrets import (
    MASK,
    REF_KEY,
    REF_PLACEHOLDER,
    Pattern,
    SecretRef,
    as_ref,
    find_refs,
    has_ref,
    is_ref_shaped,
    is_secret_path,
    ref_problem,
    values_at,
)


@dataclass(frozen=True)
class Checkable:
    """A value ready for schema validation, and what its messages must not show."""

    value: Any  # references replaced by REF_PLACEHOLDER
    refs: dict[Path, SecretRef]
    problems: list[FieldError]  # malformed references, at their paths
    patterns: tuple[Pattern, ...]
    hidden: tuple[str, ...]  # texts of secret values, to scrub from messages

    @property
    def broken(self) -> set[Path]:
        """Where the malformed references are."""
        return {problem.path[:-1] for problem in self.problems}

    def concerns(self, path: Path) -> bool:
        """Whether ``path`` is at or inside a reference or a secret field (its messages need care)."""
        return (any(path[:len(p)] == p for p in [*self.refs, *self.broken])
                or is_secret_path(path, self.patterns))


def checkable(value: Any, patterns: tuple[Pattern, ...] = ()) -> Checkable:
    """``value`` with each reference replaced by a string placeholder (a reference gives a string)."""
    if not patterns and not has_ref(value):
        return Checkable(value, {}, [], (), ())  # the common case, kept cheap: plan checks every deployment
    refs: dict[Path, SecretRef] = {}
    problems: list[FieldError] = []
    for path, mapping in find_refs(value):
        problem = ref_problem(mapping)
        if problem:
            problems.append(FieldError((*path, REF_KEY), problem))
        else:
            refs[path] = as_ref(mapping)  # type: ignore[assignment]
    hidden = tuple(text for _, secret in values_at(value, patterns) for text in _texts(secret))
    replaced = _replace_at(value, set(refs) | {problem.path[:-1] for problem in problems}, REF_PLACEHOLDER)
    return Checkable(replaced, refs, problems, patterns, hidden)


def _texts(value: Any) -> Iterator[str]:
    """The texts a secret value may appear as in a message: each string and number in it."""
    if is_ref_shaped(value):
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
        yield str(value)


def _replace_at(value: Any, paths: set[Path], replacement: Any, path: Path = ()) -> Any:
    if not paths:
        return value
    if path in paths:
        return replacement
    if isinstance(value, dict):
        return {key: _replace_at(item, paths, replacement, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_at(item, paths, replacement, (*path, index)) for index, item in enumerate(value)]
    return value


def safe_error(error: ValidationError, view: Checkable) -> str | None:
    """The message of a schema error that shows no secret, or None to drop it.

    At a reference only the type can be judged (a reference gives a
    string); other constraints wait for the value at launch. At a secret
    field the message says what is wrong without quoting the value; any
    other message has the secret values it quotes (a parent object's repr
    does) replaced by ``***``.
    """
    path = tuple(error.absolute_path)
    if any(path[:len(p)] == p for p in view.broken):
        return None  # the reference's own problem is reported already
    at, ref = next(((p, r) for p, r in view.refs.items() if path[:len(p)] == p), ((), None))
    if ref is not None:
        if error.validator != "type" or path != at:
            return None
        return f"{ref.label} gives a string, but this field must be of type {_types(error.validator_value)}"
    if is_secret_path(path, view.patterns):
        return f"the secret value (not shown) {_constraint(error)}"
    return scrub(error.message, view.hidden)


def _types(expected: Any) -> str:
    return " or ".join(repr(t) for t in expected) if isinstance(expected, list) else repr(expected)


def _constraint(error: ValidationError) -> str:
    if error.validator == "type":
        return f"is not of type {_types(error.validator_value)}"
    if error.validator in ("enum", "const"):
        return "is not one of the allowed values"
    if error.validator == "pattern":
        return f"does not match the pattern {error.validator_value!r}"
    if error.validator in ("minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
                           "exclusiveMaximum", "minItems", "maxItems", "format"):
        return f"does not satisfy {error.validator}: {error.validator_value!r}"
    return f"does not satisfy the schema's {error.validator!r}"


def scrub(message: str, hidden: tuple[str, ...]) -> str:
    """``message`` with every quoted or plain occurrence of the hidden texts replaced by ``***``.

    A plain (unquoted) text shorter than 4 characters is left alone: hiding
    every "1" or "eu" would garble the message and hide next to nothing.
    """
    for text in sorted(hidden, key=len, reverse=True):
        forms = (repr(text), json.dumps(text, ensure_ascii=False)) + ((text,) if len(text) >= 4 else ())
        for form in forms:
            message = message.replace(form, MASK)
    return message

