"""Job variables checked against the pool's variables schema, blamed on whoever set them.

``template`` validates the merged variables of a run here. A problem is
reported at the field a person wrote: the run's own job variables
(``jobVariables...``, relative to the run), the deployment's
(``spec.jobVariables...``), or the pool's default (``baseJobTemplate...``).
Compiled validators are cached by schema content, since ``plan`` renders
every deployment of a pool against the same schema.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema_rs
from jsonschema import Draft7Validator, ValidationError

from orchestra.errors import FieldError, Path, PathPart
from orchestra.jobs.secret_checks import checkable, safe_error, scrub
from orchestra.jobs.secrets import Pattern

RUN_HINT = " (from the run's job variables)"


@dataclass(frozen=True)
class SchemaValidators:
    """The reference validator, whose errors carry paths, and a fast one for the common, valid case."""

    errors: Draft7Validator
    fast: Any  # a jsonschema_rs validator, or None if it cannot compile the schema


@lru_cache(maxsize=256)
def _compiled(frozen: str) -> SchemaValidators:
    schema = json.loads(frozen)
    try:
        fast = jsonschema_rs.Draft7Validator(schema, validate_formats=True)
    except Exception:  # noqa: BLE001 - any refusal just means "no fast path"
        fast = None
    return SchemaValidators(Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER), fast)


def validators_for(schema: dict[str, Any]) -> SchemaValidators:
    """Compiled draft-07 validators, shared by every schema with the same content."""
    return _compiled(json.dumps(schema, sort_keys=True, default=str))


@dataclass(frozen=True)
class Sources:
    """The layers merged into a run's variables, to find who set a value."""

    defaults: dict[str, Any]
    deployment: dict[str, Any]
    run: dict[str, Any]

    def blame(self, path: Path) -> tuple[Path, str]:
        """Where the value at ``path`` of the merged variables was written, and a hint.

        The latest layer holding the whole of ``path`` wrote it. Failing that
        (a key that is missing or unknown), the layer holding the longest part
        of it, the later one on a tie, since it replaced the earlier one's.
        """
        run, deployment, full = _depth(self.run, path), _depth(self.deployment, path), len(path)
        if path and run == full:
            return ("jobVariables", *path), RUN_HINT
        if path and deployment == full:
            return ("spec", "jobVariables", *path), ""
        if path and _depth(self.defaults, path) == full:
            return ("baseJobTemplate", "variables", "properties", path[0], "default", *path[1:]), " (the pool's default)"
        if run and run >= deployment:
            return ("jobVariables", *path), RUN_HINT
        return ("spec", "jobVariables", *path[:deployment or full - 1]), ""


def _depth(value: Any, path: Path) -> int:
    """How many leading parts of ``path`` exist in ``value`` (a key holding null counts)."""
    for depth, part in enumerate(path):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return depth
    return len(path)


def variable_errors(validators: SchemaValidators, merged: dict[str, Any], sources: Sources,
                    secret: tuple[Pattern, ...] = ()) -> list[FieldError]:
    """Every schema violation of ``merged``, each at the field that caused it.

    ``secret`` are the paths the schema marks secret: their values are never
    quoted, and a ``secretRef`` is checked for its shape and type only (its
    value is read at launch; ``secrets.checkable``).
    """
    view = checkable(merged, secret)
    errors = [FieldError(*_blamed(sources, p.path, p.message)) for p in view.problems]
    # jsonschema_rs answers "valid?" about 50x faster; the Python validator,
    # whose errors have the paths we need, runs only when something is wrong.
    if validators.fast is not None and _fast_valid(validators.fast, view.value):
        return errors
    found = validators.errors.iter_errors(view.value)
    for error in sorted(found, key=lambda e: [str(part) for part in e.absolute_path]):
        if view.concerns(tuple(error.absolute_path)):
            safe = safe_error(error, view)
            if safe is not None:
                errors.append(FieldError(*_blamed(sources, tuple(error.absolute_path), safe)))
            continue
        for path, message in _explained(error):
            errors.append(FieldError(*_blamed(sources, path, scrub(message, view.hidden))))
    return errors


def _blamed(sources: Sources, path: Path, message: str) -> tuple[Path, str]:
    where, hint = sources.blame(path)
    return where, message + hint


def _fast_valid(validator: Any, instance: dict[str, Any]) -> bool:
    try:
        return bool(validator.is_valid(instance))
    except Exception:  # noqa: BLE001 - e.g. a value it cannot convert; let the reference decide
        return False


def _explained(error: ValidationError) -> Iterator[tuple[Path, str]]:
    """The paths and plain messages of one error; ``required`` and unknown keys get the key's own path."""
    path: tuple[PathPart, ...] = tuple(error.absolute_path)
    noun = "job variable" if not path else "key"
    if error.validator == "required":
        key = next((k for k in error.validator_value if error.message.startswith(repr(k))), None)
        yield ((*path, key), f"required {noun} {key!r} is missing") if key else (path, error.message)
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        for key in _extra_keys(error.instance, error.schema):
            yield (*path, key), f"unknown {noun} {key!r}{_did_you_mean(key, error.schema)}"
    elif error.validator == "pattern":
        expected = error.schema.get("description") or f"matching {error.validator_value}"
        yield path, f"{error.instance!r} is not in the expected form: {expected}"
    else:
        yield path, error.message


def _extra_keys(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties") or {}
    patterns = list(schema.get("patternProperties") or {})
    return [key for key in instance if key not in properties and not any(re.search(p, key) for p in patterns)]


def _did_you_mean(key: str, schema: dict[str, Any]) -> str:
    known = sorted(schema.get("properties") or {})
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known: {', '.join(known)}" if known else ""
