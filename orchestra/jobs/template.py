"""Render a run's job from its pool's base job template and its deployment.

The job renderer of DESIGN.md "Job rendering", as pure functions: spec
validation calls ``check_template`` on every pool and ``render_errors`` on
every deployment (a trial render, so ``plan`` catches what would fail at run
time); workers and ``orchestra render`` call ``render_job``. The steps:

1. the pool defaults (``default`` of each variable in the schema);
2. deep-merge the deployment's ``jobVariables``, then the run's, and record
   the result as an RFC 6902 patch against the defaults (``merge``);
3. validate the merged variables against the schema (``variables``);
4. render ``jobConfiguration``'s placeholders (``placeholders``), with the
   argv built by ``command``;
5. apply the deployment's ``jobPatches`` (``patches``); then add orchestra's
   environment variables (``env``).

Secrets (``secrets``): values the schemas mark secret and ``secretRef``
references are rendered as tokens, so one render gives both the masked job a
run stores and shows (``RenderedJob.job``) and the real one for the runner
(``RenderedJob.runnable()``).

Every error is a ``FieldError`` whose path is relative to the deployment
document (``spec.jobVariables.env.X``), to the run (``jobVariables...``) or
to the pool's template (``baseJobTemplate...``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from jsonschema import Draft7Validator, SchemaError

from orchestra.errors import FieldError, Path
from orchestra.jobs.command import build_command
from orchestra.jobs.env import with_orchestra_env
from orchestra.jobs.merge import copy_json, merge_layers, variables_patch
from orchestra.jobs.patches import apply_patches
from orchestra.jobs.placeholders import (
    BUILTIN_ROOTS,
    MISSING,
    Scope,
    Unresolved,
    interpolate,
    is_builtin,
    names_in,
    syntax_problem,
    unknown_message,
    whole_name,
)
from orchestra.jobs.secret_checks import checkable, safe_error
from orchestra.jobs.secret_tokens import SecretTable, resolve_refs
from orchestra.jobs.secrets import Pattern, SecretRef, masked, secret_paths
from orchestra.jobs.variables import SchemaValidators, Sources, validators_for, variable_errors

IN_POOL = " (in the pool's base job template)"


@dataclass(frozen=True)
class RenderedJob:
    """What a run stores: its job, its variables and what they override, secrets masked.

    ``job``, ``variables`` and ``variables_patch`` show ``***`` for a secret
    given by value and ``<secret:env:NAME>`` for a reference: they are what
    is stored on the run and printed. Only ``runnable()`` has the real
    values, for the runner; references must be resolved first
    (``resolve_secret_refs``, on the worker that launches the job).
    """

    job: dict[str, Any]
    variables: dict[str, Any]
    variables_patch: list[dict[str, Any]]
    secrets: SecretTable = field(default_factory=SecretTable, repr=False, compare=False)
    concealed_job: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def secret_refs(self) -> dict[SecretRef, Path]:
        """The references to resolve before launch, each with where it was first used."""
        return self.secrets.refs

    def resolve_secret_refs(self, environ: Mapping[str, str], read_file: Callable[[str], str]) -> list[FieldError]:
        """Read every reference's value into this job (never into the masked fields); the problems found."""
        return resolve_refs(self.secrets, environ, read_file)

    def runnable(self) -> dict[str, Any]:
        """The job for the runner, with the real secret values; never store or show it."""
        if self.concealed_job is None:
            return self.job
        return self.secrets.revealed(self.concealed_job)


def pool_defaults(variables_schema: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` of each top-level variable; variables without one are absent."""
    properties = variables_schema.get("properties") or {}
    return {name: copy_json(prop["default"]) for name, prop in properties.items()
            if isinstance(prop, dict) and "default" in prop}


def render_job(template: dict[str, Any], deployment: dict[str, Any], *, parameters: dict[str, Any] | None = None,
               job_variables: dict[str, Any] | None = None, run_id: str = "<run-id>",
               scheduled_time: str | None = None, python: str = "python") -> RenderedJob:
    """The rendered job of one run; raises the first ``FieldError`` found."""
    rendered, errors = _render(template, deployment, parameters, job_variables, run_id, scheduled_time, python)
    if errors or rendered is None:
        raise errors[0]
    table = rendered.secrets
    if not table and not rendered.patterns:
        return RenderedJob(rendered.job, rendered.variables, _patch(rendered))
    variables = masked(rendered.variables, rendered.patterns, refs_as_labels=True)
    defaults = masked(rendered.defaults, rendered.patterns, refs_as_labels=True)
    patch = variables_patch(defaults, variables) if rendered.overridden else []
    return RenderedJob(table.masked(rendered.job), variables, patch, table, rendered.job)


def _patch(rendered: _Result) -> list[dict[str, Any]]:
    """Nothing to diff when neither the deployment nor the run set a variable (the common
    case): the merged variables are then a copy of the defaults, and ``make_patch`` is the
    slowest step of a render."""
    return variables_patch(rendered.defaults, rendered.variables) if rendered.overridden else []


def render_errors(template: dict[str, Any], deployment: dict[str, Any], *, parameters: dict[str, Any] | None = None,
                  job_variables: dict[str, Any] | None = None, run_id: str = "<run-id>",
                  scheduled_time: str | None = None, python: str = "python") -> list[FieldError]:
    """Every independent problem ``render_job`` would meet, all at once (empty when it renders)."""
    return _render(template, deployment, parameters, job_variables, run_id, scheduled_time, python)[1]


# --- the pool's template on its own ----------------------------------------------------------------------------


def check_template(template: dict[str, Any]) -> list[FieldError]:
    """Problems of a base job template, with paths relative to it.

    The variables must be a valid draft-07 object schema whose defaults
    satisfy it, and every placeholder must name a variable or a built-in.
    """
    return [FieldError(e.path, e.message) for e in _compiled(template).errors]


@dataclass(frozen=True)
class _Template:
    """What rendering needs from a template, worked out once per template content."""

    errors: tuple[FieldError, ...]
    validators: SchemaValidators | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    names: frozenset[str] = frozenset()
    secret: tuple[Pattern, ...] = ()  # variable paths the schema marks secret


def _compiled(template: dict[str, Any]) -> _Template:
    # Keyed by content (in key order: cheaper than sorting, and equal
    # templates come from the same YAML anyway), because ``plan`` renders
    # every deployment of a pool against the same template. A worker renders
    # every run of a pool against the very same dict (its cached pool, or the
    # shared default template), which is never mutated: that object is
    # remembered, so the per-run render skips encoding it.
    global _last_compiled
    last = _last_compiled  # one read: another thread may replace it meanwhile
    if last is not None and last[0] is template:
        return last[1]
    compiled = _compile(json.dumps(template, default=str))
    _last_compiled = (template, compiled)  # holds the dict: its id cannot be reused meanwhile
    return compiled


_last_compiled: tuple[dict[str, Any], _Template] | None = None


@lru_cache(maxsize=256)
def _compile(frozen: str) -> _Template:
    template = json.loads(frozen)
    errors = tuple(_check(template))
    if errors:
        return _Template(errors)
    schema = template["variables"]
    return _Template((), validators_for(schema), pool_defaults(schema), variable_names(schema), secret_paths(schema))


def _check(template: Any) -> Iterator[FieldError]:
    if not isinstance(template, dict):
        yield FieldError((), "a base job template must be an object with 'variables' and 'jobConfiguration'")
        return
    for key in template:
        if key not in ("variables", "jobConfiguration"):
            yield FieldError((key,), f"unknown key {key!r}; a template has 'variables' and 'jobConfiguration'")
    schema_errors = list(_schema_errors(template.get("variables")))
    yield from schema_errors
    config = template.get("jobConfiguration")
    if not isinstance(config, dict):
        yield FieldError(("jobConfiguration",), "must be an object: the job handed to the runner")
    elif not schema_errors:
        yield from _placeholder_errors(config, variable_names(template["variables"]), ("jobConfiguration",))


def variable_names(schema: dict[str, Any]) -> frozenset[str]:
    """The variables a template's placeholders may name."""
    return frozenset(schema.get("properties") or {})


def _schema_errors(schema: Any) -> Iterator[FieldError]:
    if not isinstance(schema, dict):
        yield FieldError(("variables",), "must be a JSON Schema object describing the job variables")
        return
    try:
        Draft7Validator.check_schema(schema)
    except SchemaError as exc:
        yield FieldError(("variables", *exc.absolute_path), f"not a valid draft-07 JSON Schema: {exc.message}")
        return
    if schema.get("type", "object") != "object":
        yield FieldError(("variables", "type"), "the job variables schema must have type 'object'")
        return
    for name in variable_names(schema) & set(BUILTIN_ROOTS):
        yield FieldError(("variables", "properties", name), f"{name!r} is reserved for a built-in placeholder")
    yield from _default_errors(schema)


def _default_errors(schema: dict[str, Any]) -> Iterator[FieldError]:
    """Defaults that break their own schema; "required" at the root is fine (deployments supply it).

    A default may be a ``secretRef`` (checked for shape and type), and a
    secret default is never quoted (``secrets.checkable``).
    """
    view = checkable(pool_defaults(schema), secret_paths(schema))
    for problem in view.problems:
        yield FieldError(("variables", "properties", problem.path[0], "default", *problem.path[1:]), problem.message)
    for error in validators_for(schema).errors.iter_errors(view.value):
        path = tuple(error.absolute_path)
        message = safe_error(error, view)
        if path and message is not None:
            yield FieldError(("variables", "properties", path[0], "default", *path[1:]),
                             f"the default does not satisfy the schema: {message}")


def _placeholder_errors(value: Any, names: frozenset[str], path: Path) -> Iterator[FieldError]:
    if isinstance(value, str):
        problem = syntax_problem(value) or next(
            (unknown_message(n, names) for n in names_in(value) if n not in names and not is_builtin(n)), None)
        if problem:
            yield FieldError(path, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "{{" in str(key):
                yield FieldError((*path, key), "placeholders are not rendered in keys, only in values")
            yield from _placeholder_errors(item, names, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _placeholder_errors(item, names, (*path, index))


# --- one run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    """A render before masking: the job holds tokens where secrets go (``secrets.SecretTable``)."""

    job: dict[str, Any]
    variables: dict[str, Any]  # merged, as given (references unresolved)
    defaults: dict[str, Any]
    secrets: SecretTable
    patterns: tuple[Pattern, ...]  # secret variable paths
    overridden: bool = True  # the deployment or the run set a variable: the patch may not be empty


@dataclass(frozen=True)
class _Inputs:
    """The parts of a deployment and a run that rendering reads, shape-checked."""

    spec: dict[str, Any]
    scope: Scope
    deployment_variables: dict[str, Any]
    run_variables: dict[str, Any]
    patches: Any


def _render(template: dict[str, Any], deployment: dict[str, Any], parameters: dict[str, Any] | None,
            job_variables: dict[str, Any] | None, run_id: str, scheduled_time: str | None,
            python: str) -> tuple[_Result | None, list[FieldError]]:
    compiled = _compiled(template)
    errors = [FieldError(("baseJobTemplate", *e.path), e.message + IN_POOL) for e in compiled.errors]
    if errors or compiled.validators is None:
        return None, errors
    inputs, errors = _inputs(deployment, parameters, job_variables, run_id, scheduled_time, compiled.names)
    if inputs is None:
        return None, errors
    return _render_run(template["jobConfiguration"], compiled, compiled.validators, inputs, python)


def _render_run(config: dict[str, Any], compiled: _Template, validators: SchemaValidators, inputs: _Inputs,
                python: str) -> tuple[_Result | None, list[FieldError]]:
    merged = merge_layers(compiled.defaults, inputs.deployment_variables, inputs.run_variables)
    sources = Sources(compiled.defaults, inputs.deployment_variables, inputs.run_variables)
    errors = variable_errors(validators, merged, sources, compiled.secret)
    # Secrets are rendered as tokens, so the job can be stored masked and
    # handed to the runner real, from one render (``secrets.SecretTable``).
    table = SecretTable()
    parameters = table.conceal(inputs.scope.parameters, secret_paths(inputs.spec.get("parameterSchema")),
                               ("parameters",))
    scope = replace(inputs.scope, parameters=parameters)
    command, command_errors = build_command(inputs.spec, scope, python)
    if command is None and command_errors:
        return None, _masked_errors(table, errors + command_errors)
    variables = table.conceal(merged, compiled.secret, ("jobVariables",))
    job, job_errors = _job(config, replace(scope, variables=variables, command=command), sources, inputs.patches)
    seen = {error.path for error in errors}  # the env check repeats what the schema may have said
    errors += command_errors + [error for error in job_errors if error.path not in seen]
    # The patch is left to render_job: make_patch is the slowest step, and the
    # trial render of every deployment during plan only needs the errors.
    if errors:
        return None, _masked_errors(table, errors)
    overridden = bool(inputs.deployment_variables or inputs.run_variables)
    return _Result(job, merged, copy_json(compiled.defaults), table, compiled.secret, overridden), []


def _masked_errors(table: SecretTable, errors: list[FieldError]) -> list[FieldError]:
    """Messages that quote a rendered value (a failed ``test`` patch) show the secret's label, not its token."""
    if not table:
        return errors
    return [FieldError(error.path, table.masked_text(error.message)) for error in errors]


def _inputs(deployment: Any, parameters: dict[str, Any] | None, job_variables: dict[str, Any] | None,
            run_id: str, scheduled_time: str | None, names: frozenset[str]) -> tuple[_Inputs | None, list[FieldError]]:
    spec = _mapping(deployment, "spec")
    metadata = _mapping(deployment, "metadata")
    if parameters is None:
        parameters = _mapping(spec, "parameters")
    checks = [(("spec",), spec), (("metadata",), metadata), (("metadata", "labels"), _mapping(metadata, "labels")),
              (("spec", "parameters"), parameters), (("spec", "jobVariables"), _mapping(spec, "jobVariables")),
              (("jobVariables",), job_variables if job_variables is not None else {})]
    errors = [FieldError(path, "must be an object") for path, value in checks if not isinstance(value, dict)]
    if errors:
        return None, errors
    scope = Scope(parameters=parameters, run_id=run_id, deployment_name=str(metadata.get("name", "")),
                  labels=_mapping(metadata, "labels"), scheduled_time=scheduled_time, variable_names=names)
    return _Inputs(spec, scope, _mapping(spec, "jobVariables"), job_variables or {}, spec.get("jobPatches") or []), []


def _mapping(parent: Any, key: str) -> Any:
    """``parent[key]``, with absent or null as an empty object (a wrong type is passed on to be reported)."""
    value = parent.get(key) if isinstance(parent, dict) else None
    return {} if value is None else value


def _job(config: dict[str, Any], scope: Scope, sources: Sources, patches: Any) -> tuple[dict[str, Any], list[FieldError]]:
    """Steps 4 and 5: placeholders, patches, then orchestra's environment variables."""
    errors: list[FieldError] = []
    job = _render_value(config, scope, ("baseJobTemplate", "jobConfiguration"), errors)
    if errors:
        return job, errors  # a partly rendered job would make patches fail for the wrong reason
    job, failure = apply_patches(job, patches)
    if failure:
        return job, [failure]
    return with_orchestra_env(job, scope, sources, patches)


def _render_value(value: Any, scope: Scope, path: Path, errors: list[FieldError]) -> Any:
    """``value`` with placeholders replaced; ``MISSING`` drops a key or list item."""
    if isinstance(value, str):
        return _render_string(value, scope, path, errors)
    if isinstance(value, dict):
        items = ((key, _render_value(item, scope, (*path, key), errors)) for key, item in value.items())
        return {key: item for key, item in items if item is not MISSING}
    if isinstance(value, list):
        items = (_render_value(item, scope, (*path, index), errors) for index, item in enumerate(value))
        return [item for item in items if item is not MISSING]
    return value


def _render_string(text: str, scope: Scope, path: Path, errors: list[FieldError]) -> Any:
    try:
        name = whole_name(text)
        if name is None:
            return interpolate(text, scope.resolve)
        value = scope.resolve(name)
        return value if value is MISSING else copy_json(value)
    except Unresolved as exc:
        errors.append(FieldError(path, str(exc) + IN_POOL))
        return text
