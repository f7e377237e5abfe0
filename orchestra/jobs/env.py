"""The environment variables orchestra gives every job, after rendering and patches.

Called by ``template`` as the last step: when the rendered job has an
``env`` mapping, it gains ``ORCHESTRA_RUN_ID``, ``ORCHESTRA_DEPLOYMENT``,
``ORCHESTRA_PARAMETERS`` (compact JSON), ``ORCHESTRA_SCHEDULED_TIME`` (when
the run has one) and ``ORCHESTRA_PARAM_<NAME>`` per top-level parameter.
This is how a shell script or an entrypoint reads parameters without
pasting them into code. The ``ORCHESTRA_`` prefix is reserved, so a job can
trust these values: a user variable with that prefix is an error, not
silently overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestra.errors import FieldError, Path
from orchestra.jobs.command import param_env_name
from orchestra.jobs.placeholders import Scope, to_json, to_text
from orchestra.jobs.variables import Sources

RESERVED_PREFIX = "ORCHESTRA_"


def orchestra_env(scope: Scope) -> tuple[dict[str, str], list[FieldError]]:
    """The variables orchestra sets, and parameter names that would collide."""
    env = {"ORCHESTRA_RUN_ID": scope.run_id, "ORCHESTRA_DEPLOYMENT": scope.deployment_name,
           "ORCHESTRA_PARAMETERS": to_json(scope.parameters)}
    if scope.scheduled_time is not None:
        env["ORCHESTRA_SCHEDULED_TIME"] = scope.scheduled_time
    owners: dict[str, str] = {}
    errors = []
    for name, value in scope.parameters.items():
        variable = param_env_name(name)
        if variable in owners:
            errors.append(FieldError(("spec", "parameters", name), f"parameters {owners[variable]!r} and {name!r} "
                                     f"both become ${variable}; rename one of them"))
        owners[variable] = name
        env[variable] = to_text(value)
    return env, errors


def with_orchestra_env(job: dict[str, Any], scope: Scope, sources: Sources,
                       patches: Any) -> tuple[dict[str, Any], list[FieldError]]:
    """``job`` with orchestra's variables added to its ``env``, or the job unchanged without one."""
    user_env = job.get("env")
    if not isinstance(user_env, Mapping):
        return job, []
    ours, errors = orchestra_env(scope)
    for key, value in user_env.items():
        problem = _problem(key, value)
        if problem:
            path, hint = _blame(str(key), sources, patches)
            errors.append(FieldError(path, problem + hint))
    return {**job, "env": {**user_env, **ours}}, errors


def _problem(key: Any, value: Any) -> str | None:
    if not isinstance(key, str) or not key or "=" in key:
        return f"environment variable name {key!r} is not valid"
    if key.startswith(RESERVED_PREFIX):
        return f"environment variable {key} is reserved: orchestra sets the {RESERVED_PREFIX}* variables itself"
    if not isinstance(value, str):
        return f"environment variable {key} must be a string, not {to_json(value)} (quote it)"
    return None


def _blame(key: str, sources: Sources, patches: Any) -> tuple[Path, str]:
    """Who put ``key`` into the job's env: a job-variables layer, a patch, or the pool."""
    path: Path = ("env", key)
    if _has_env_key(sources.run, key) or _has_env_key(sources.deployment, key):
        return sources.blame(path)
    for index, operation in enumerate(patches if isinstance(patches, list) else []):
        if isinstance(operation, dict) and str(operation.get("path", "")).startswith("/env"):
            return ("spec", "jobPatches", index), ""
    if _has_env_key(sources.defaults, key):
        return sources.blame(path)
    return ("baseJobTemplate", "jobConfiguration", "env"), " (in the pool's base job template)"


def _has_env_key(variables: dict[str, Any], key: str) -> bool:
    env = variables.get("env")
    return isinstance(env, dict) and key in env
