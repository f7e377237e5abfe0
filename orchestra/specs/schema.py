"""Validate documents against the JSON Schemas shipped in ``schemas/``.

The same files editors use through ``# yaml-language-server: $schema=...``
are the validator's source of truth, so the two never disagree. The common
case (a valid document) goes through jsonschema-rs, compiled once per kind;
only documents that fail are re-checked with the pure-Python jsonschema,
whose errors carry the detail we turn into diagnostics (the failing field,
"did you mean" for a misspelt one).
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs

from orchestra.errors import FieldError

KINDS = ("WorkPool", "WorkQueue", "Deployment")


@cache
def kind_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a kind, as shipped in the package."""
    text = resources.files("orchestra.specs").joinpath("schemas", f"{kind.lower()}.json").read_text()
    return json.loads(text)


@cache
def _fast(kind: str) -> Any:
    return jsonschema_rs.Draft7Validator(kind_schema(kind))


@cache
def _detailed(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(kind_schema(kind))


def schema_errors(kind: str, document: dict[str, Any]) -> list[FieldError]:
    """Every schema violation of ``document``, each at the path of the field to blame."""
    if _fast(kind).is_valid(document):
        return []
    errors = [_to_field_error(e) for e in _detailed(kind).iter_errors(document)]
    return sorted(errors, key=lambda e: [str(p) for p in e.path])


def _to_field_error(error: jsonschema.ValidationError) -> FieldError:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        return _unknown_field(error, path)
    if error.validator == "required":
        return FieldError(path, f"missing required field {_quoted_missing(error)}")
    if error.validator in ("enum", "const"):
        allowed = error.validator_value if error.validator == "enum" else [error.validator_value]
        hint = _closest(str(error.instance), [str(a) for a in allowed])
        message = f"{error.instance!r} is not one of {', '.join(repr(a) for a in allowed)}"
        return FieldError(path, message + (f"; did you mean {hint!r}?" if hint else ""))
    if error.validator == "type":
        return FieldError(path, f"expected {_type_words(error.validator_value)}, got {_describe(error.instance)}")
    if error.validator == "pattern" and path[-1:] == ("name",):
        return FieldError(path, f"{error.instance!r} is not a valid name: use lower-case letters, digits "
                          "and '-', starting and ending with a letter or digit")
    return FieldError(path, error.message)


def _unknown_field(error: jsonschema.ValidationError, path: tuple[Any, ...]) -> FieldError:
    known = list(error.schema.get("properties", {}))
    extra = sorted(set(error.instance) - set(known))
    field = extra[0]
    hint = _closest(field, known)
    message = f"unknown field {field!r}"
    message += f"; did you mean {hint!r}?" if hint else f"; known fields: {', '.join(known)}"
    return FieldError(path + (field,), message)


def _quoted_missing(error: jsonschema.ValidationError) -> str:
    return error.message.split(" is a required property")[0]


def _closest(word: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        return lowered.get(word.lower())
    return matches[0]


def _type_words(expected: str | list[str]) -> str:
    names = [expected] if isinstance(expected, str) else expected
    words = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    return " or ".join(words.get(n, n) for n in names)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
