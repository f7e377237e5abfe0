"""The Run form of a deployment, generated from its parameter schema, and its parsing.

Each parameter becomes one field: an enum a ``<select>``, a boolean a
checkbox, numbers number inputs, objects and arrays a JSON textarea, the
rest text. The schema's cheap constraints (required, minimum, maximum,
lengths, pattern) become HTML attributes, so the browser checks them before
sending; everything else is the server's job: the submitted values go to
``reconcile.operations.create_manual_run`` exactly as an API call's would,
and its field errors come back next to the fields they name.

A field left empty is not sent: the deployment's default applies. Pure
functions of the spec and the submitted form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JOB_VARIABLES = "jobVariables"
PREFIX = "param."
_KINDS = {"integer": "integer", "number": "number", "boolean": "checkbox", "object": "json", "array": "json"}
_BY_PYTHON_TYPE = ((bool, "checkbox"), (int, "integer"), (float, "number"), (dict, "json"), (list, "json"))


@dataclass
class Field:
    """One input of the Run form."""

    name: str
    kind: str  # text | secret | integer | number | checkbox | select | json
    required: bool
    description: str = ""
    value: str = ""  # as the input shows it
    options: list[tuple[str, str]] = field(default_factory=list)  # (submitted value, label) of a select
    attrs: dict[str, str] = field(default_factory=dict)  # HTML constraint attributes
    error: str = ""

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "param-" + "".join(c if c.isalnum() else "-" for c in self.name)


@dataclass
class RunForm:
    fields: list[Field]
    job_variables: str = ""
    job_variables_error: str = ""
    errors: list[str] = field(default_factory=list)  # problems that name no field


def run_form(spec: Mapping[str, Any]) -> RunForm:
    """The empty form for a deployment: each field shows its default."""
    schema = spec.get("parameterSchema") or {}
    properties = schema.get("properties") or {}
    defaults = spec.get("parameters") or {}
    required = set(schema.get("required") or [])
    names = list(properties) + [name for name in defaults if name not in properties]
    return RunForm([_field(name, properties.get(name) or {}, defaults, name in required) for name in names])


def _field(name: str, schema: Mapping[str, Any], defaults: Mapping[str, Any], required: bool) -> Field:
    default = defaults.get(name, schema.get("default"))
    kind = _kind(schema, default)
    made = Field(name, kind, required, str(schema.get("description") or schema.get("title") or ""))
    if kind == "select":
        made.options = [(json.dumps(v), v if isinstance(v, str) else json.dumps(v)) for v in schema["enum"]]
    made.value = "" if default is None or kind == "secret" else _shown(default, kind)
    made.attrs = _constraints(schema, kind, required)
    return made


def _kind(schema: Mapping[str, Any], default: Any) -> str:
    if schema.get("writeOnly") is True or schema.get("format") == "password":
        return "secret"  # never shown back; left empty, the (hidden) default applies
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "select"
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), None)
    if isinstance(declared, str):
        return _KINDS.get(declared, "text")
    return next((kind for python_type, kind in _BY_PYTHON_TYPE if isinstance(default, python_type)), "text")


def _shown(value: Any, kind: str) -> str:
    if kind in ("select", "json") or kind == "checkbox":
        return json.dumps(value)
    return str(value)


def _constraints(schema: Mapping[str, Any], kind: str, required: bool) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if required and kind != "checkbox":
        attrs["required"] = "required"
    if kind in ("integer", "number"):
        attrs["step"] = "1" if kind == "integer" else "any"
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if isinstance(schema.get(key), int | float):
                attrs[attr] = str(schema[key])
    if kind in ("text", "secret"):
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength"), ("pattern", "pattern")):
            if key in schema:
                attrs[attr] = str(schema[key])
    if kind == "secret":
        attrs.pop("required", None)  # a stored default may stand in for it
        attrs["autocomplete"] = "off"
    return attrs


def parse_run_form(form: RunForm, submitted: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters and job variables a submitted form asks for.

    Fills ``form`` with what was submitted (so a re-rendered form keeps it)
    and with the errors of values that are not even of the right type.
    """
    parameters: dict[str, Any] = {}
    for item in form.fields:
        raw = submitted.get(item.input_name, "")
        item.value = json.dumps(raw == "true") if item.kind == "checkbox" else "" if item.kind == "secret" else raw
        if item.kind == "checkbox":
            parameters[item.name] = raw == "true"
        elif raw.strip() != "":
            try:
                parameters[item.name] = _typed(raw, item.kind)
            except ValueError as exc:
                item.error = str(exc)
    form.job_variables = submitted.get(JOB_VARIABLES, "")
    return parameters, _job_variables(form)


def _typed(raw: str, kind: str) -> Any:
    if kind == "integer":
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if kind == "number":
        try:
            return int(raw.strip()) if raw.strip().lstrip("-").isdigit() else float(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    if kind in ("select", "json"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return raw


def _job_variables(form: RunForm) -> dict[str, Any]:
    if not form.job_variables.strip():
        return {}
    try:
        value = json.loads(form.job_variables)
    except json.JSONDecodeError as exc:
        form.job_variables_error = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return {}
    if not isinstance(value, dict):
        form.job_variables_error = 'must be a JSON object, such as {"env": {"LOG_LEVEL": "debug"}}'
        return {}
    return value


def has_errors(form: RunForm) -> bool:
    return bool(form.errors or form.job_variables_error or any(f.error for f in form.fields))


def attach_problems(form: RunForm, problems: list[dict[str, Any]]) -> None:
    """Put the API's 422 field errors (``loc``: body, parameters|jobVariables, ...) next to their fields."""
    by_name = {f.name: f for f in form.fields}
    for problem in problems:
        loc = [str(part) for part in problem.get("loc", [])][1:]
        message = str(problem.get("msg", "invalid"))
        if loc[:1] == ["parameters"] and len(loc) > 1 and loc[1] in by_name:
            target = by_name[loc[1]]
            target.error = "; ".join(filter(None, [target.error, _at(loc[2:], message)]))
        elif loc[:1] == [JOB_VARIABLES]:
            form.job_variables_error = "; ".join(filter(None, [form.job_variables_error, _at(loc[1:], message)]))
        else:
            form.errors.append(_at(loc, message))


def _at(path: list[str], message: str) -> str:
    return f"{'.'.join(path)}: {message}" if path else message
