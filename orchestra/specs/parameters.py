"""Parameters against their schema, at plan time and when a run is asked for.

A deployment's parameter schema is its ``parameterSchema`` or, for a Python
entrypoint run by a process pool, the one derived from the function's
signature (read with ``ast``, never imported). Deployment defaults are
checked for types only, since a required parameter may come from a
schedule or from the person starting the run; each schedule's parameters,
merged over the defaults, must satisfy the schema fully.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from orchestra.errors import FieldError
from orchestra.jobs.secret_checks import checkable, safe_error
from orchestra.jobs.secrets import secret_paths
from orchestra.jobs.signature import parameter_schema_from_entrypoint
from orchestra.specs.model import Resource


def deployment_parameter_schema(spec: dict[str, Any], pool_type: str, root: Path) -> dict[str, Any] | None:
    """The schema a deployment's parameters must satisfy, or None when unconstrained."""
    if "parameterSchema" in spec:
        return spec["parameterSchema"]
    if "entrypoint" in spec and pool_type == "process":
        working_dir = ((spec.get("jobVariables") or {}).get("workingDir")) or "."
        return parameter_schema_from_entrypoint(spec["entrypoint"], root / working_dir)
    return None


def parameter_errors(deployment: Resource) -> Iterator[FieldError]:
    spec = deployment.spec
    schema = spec.get("parameterSchema")  # derived ones were added by validate.with_derived_parameters
    if schema is None:
        return
    problem = schema_problem(_freeze(schema))
    if problem:
        yield problem
        return
    defaults = spec.get("parameters") or {}
    for error in validate_parameters(schema, defaults, require=False):
        yield error.prefixed(("spec", "parameters"))
    for index, schedule in enumerate(spec.get("schedules") or []):
        overrides = schedule.get("parameters") or {}
        for error in validate_parameters(schema, {**defaults, **overrides}):
            blame = _blame(error, overrides, index)
            yield FieldError(("spec", *blame, *error.path), error.message + f" (in schedules[{index}])")


_SAMPLES: dict[str, Any] = {"string": "x", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {},
                            "null": None}


def trial_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """Defaults, plus a sample value for each declared parameter without one.

    A parameter a person must give at run time still has to render (its
    placeholder must name a declared parameter); the trial render uses a
    value of the declared type in its place.
    """
    parameters = dict(spec.get("parameters") or {})
    properties = (spec.get("parameterSchema") or {}).get("properties") or {}
    for name, schema in properties.items():
        if name not in parameters and isinstance(schema, dict):
            parameters[name] = _sample(schema)
    return parameters


def _sample(schema: dict[str, Any]) -> Any:
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    return _SAMPLES.get(kind[0] if isinstance(kind, list) else kind, "x")


def _blame(error: FieldError, overrides: dict[str, Any], index: int) -> tuple[str | int, ...]:
    """Point at the schedule's parameters if the bad value came from there."""
    if not error.path:
        return ("schedules", index)
    return ("schedules", index, "parameters") if error.path[0] in overrides else ("parameters",)


def validate_parameters(schema: dict[str, Any], parameters: dict[str, Any], *, require: bool = True) -> list[FieldError]:
    """Problems of ``parameters`` against ``schema``, each at its path within the parameters.

    Secret-aware (``jobs.secrets``): a ``secretRef`` is checked for its shape
    and, with a string placeholder, for its type; a value the schema marks
    secret is never quoted, and neither is it inside another message.
    """
    frozen = _freeze(schema)
    view = checkable(parameters, secret_paths(schema))
    errors = list(view.problems)
    if _fast_validator(frozen).is_valid(view.value):
        return errors  # the common case; the detailed validator only runs to explain failures
    for error in _validator(frozen).iter_errors(view.value):
        if error.validator == "required" and not require:
            continue
        message = safe_error(error, view)
        if message is None:
            continue
        if error.validator == "required":
            message = f"missing required parameter {message.split(' is a required property')[0]}"
        elif error.validator == "additionalProperties":
            message = f"unknown parameter: {message}"
        errors.append(FieldError(tuple(error.absolute_path), message))
    return errors


@lru_cache(maxsize=4096)
def schema_problem(frozen: str) -> FieldError | None:
    """Whether a parameter schema is itself a valid draft-07 schema (checked once per schema)."""
    try:
        jsonschema.Draft7Validator.check_schema(json.loads(frozen))
    except jsonschema.SchemaError as exc:
        return FieldError(("spec", "parameterSchema", *exc.path), f"not a valid JSON Schema: {exc.message}")
    return None


@lru_cache(maxsize=4096)
def _fast_validator(frozen: str) -> Any:
    return jsonschema_rs.Draft7Validator(json.loads(frozen))


@lru_cache(maxsize=4096)
def _validator(frozen: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(frozen))


def _freeze(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)
