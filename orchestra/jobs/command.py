"""A deployment's argv: ``spec.command`` rendered element by element, or the entrypoint runner.

Called by ``template`` to produce the ``{{ command }}`` built-in. Each argv
element is rendered on its own and the job never goes through a shell, so a
parameter value like ``eu; rm -rf ~`` stays one plain argument. The one way
to reintroduce a shell is ``sh -c "... {{ parameters.x }} ..."``: there the
value becomes shell code, so a placeholder inside such a script is an error
that names the environment variable to read instead (``env_name_for``).
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from orchestra.errors import FieldError, PathPart
from orchestra.jobs.placeholders import (
    PLACEHOLDER_RE,
    Scope,
    Unresolved,
    interpolate,
    names_in,
    spelled,
    syntax_problem,
)

ENTRYPOINT_MODULE = "orchestra.entrypoint"

# Interpreters whose "-c" argument is code. Python is here too: a value
# pasted into `python -c "..."` is code injection just like in a shell.
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish"})
_PYTHON_RE = re.compile(r"python(?:[0-9]+(?:\.[0-9]+)?)?\Z")
# Options that consume the next argument, so it is not mistaken for the script.
_OPTIONS_WITH_ARGUMENT = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file", "-W", "-X"})


def param_env_name(name: str) -> str:
    """``who`` -> ``ORCHESTRA_PARAM_WHO``, ``my-param`` -> ``ORCHESTRA_PARAM_MY_PARAM``."""
    return "ORCHESTRA_PARAM_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def env_name_for(placeholder: str) -> str | None:
    """The environment variable that carries a built-in's value, if there is one."""
    if placeholder.startswith("parameters."):
        return param_env_name(placeholder.split(".")[1])
    return {"parameters": "ORCHESTRA_PARAMETERS", "run.id": "ORCHESTRA_RUN_ID",
            "deployment.name": "ORCHESTRA_DEPLOYMENT", "scheduledTime": "ORCHESTRA_SCHEDULED_TIME"}.get(placeholder)


def build_command(spec: dict[str, Any], scope: Scope, python: str) -> tuple[list[str] | None, list[FieldError]]:
    """The rendered argv (None when there is none or it is unusable) and every problem found.

    On errors the argv still has its full length (unrendered elements kept),
    so later steps such as ``jobPatches`` on ``/command/1`` can be checked.
    """
    if "command" not in spec:
        entrypoint = spec.get("entrypoint")
        return ([python, "-m", ENTRYPOINT_MODULE, entrypoint] if entrypoint else None), []
    argv, path, errors = _argv(spec["command"])
    if errors:
        return None, errors
    scripts = script_owners(argv)
    rendered = []
    for index, element in enumerate(argv):
        where = (*path, index) if isinstance(spec["command"], list) else path
        value, problem = _render_element(element, scripts.get(index), scope)
        rendered.append(value)
        if problem:
            errors.append(FieldError(where, problem if where != path else f"argument {index} {element!r}: {problem}"))
    return rendered, errors


def _argv(command: Any) -> tuple[list[str], tuple[PathPart, ...], list[FieldError]]:
    path: tuple[PathPart, ...] = ("spec", "command")
    if isinstance(command, str):
        try:
            # Placeholders may hold spaces ("{{ parameters.x }}"); squeeze them
            # so shlex keeps each placeholder inside one word.
            argv = shlex.split(PLACEHOLDER_RE.sub(lambda m: "{{" + m.group(1).strip() + "}}", command))
        except ValueError as exc:
            return [], path, [FieldError(path, f"cannot split the command into arguments: {exc}")]
        return argv, path, [] if argv else [FieldError(path, "the command is empty")]
    if not isinstance(command, list) or not command:
        return [], path, [FieldError(path, "must be a non-empty list of arguments or a string")]
    errors = [FieldError((*path, i), f"argument {value!r} must be a string (quote it in YAML)")
              for i, value in enumerate(command) if not isinstance(value, str)]
    return list(command), path, errors


def _render_element(element: str, interpreter: str | None, scope: Scope) -> tuple[str, str | None]:
    """One argv element rendered, or left as is with the reason it cannot be."""
    problem = syntax_problem(element)
    if problem:
        return element, problem
    names = names_in(element)
    if interpreter is not None and names:
        return element, _script_message(names[0], interpreter)
    try:
        return interpolate(element, lambda name: _argv_value(name, scope)), None
    except Unresolved as exc:
        return element, str(exc)


def _argv_value(name: str, scope: Scope) -> Any:
    if name == "command" or name in scope.variable_names:
        raise Unresolved(f"{spelled(name)!r} is not available in a command: job variables belong to the pool's "
                         "job template; a command may use parameters.*, run.id, deployment.name, "
                         "deployment.labels.* and scheduledTime")
    return scope.resolve_builtin(name)


def _script_message(name: str, interpreter: str) -> str:
    variable = env_name_for(name)
    if variable is None:
        instead = 'pass it as a separate argument after the script and read it as "$1"'
    elif _PYTHON_RE.match(interpreter):
        instead = f'read os.environ["{variable}"] instead'
    else:
        instead = f'read "${variable}" instead'
    return (f"placeholder {spelled(name)!r} inside a '{interpreter} -c' script would be run as code, so a value "
            f"such as '$(rm -rf ~)' would execute; {instead}")


def script_owners(argv: list[str]) -> dict[int, str]:
    """Index of each element that an interpreter's ``-c`` runs as code -> that interpreter."""
    owners = {}
    for start, element in enumerate(argv):
        name = os.path.basename(element)
        is_python = bool(_PYTHON_RE.match(name))
        if name in _SHELLS or is_python:
            index = _script_after(argv, start + 1, is_python)
            if index is not None:
                owners.setdefault(index, name)
    return owners


def _script_after(argv: list[str], start: int, is_python: bool) -> int | None:
    """The index of the script if the options from ``start`` include ``-c`` (``-ec``, ``-xc`` ...)."""
    has_c, index = False, start
    while index < len(argv):
        option = argv[index]
        if option == "--":
            index += 1
            break
        if not option.startswith(("-", "+")) or option in ("-", "+") or (is_python and option == "-m"):
            break
        has_c = has_c or (not option.startswith("--") and "c" in option[1:])
        index += 2 if option in _OPTIONS_WITH_ARGUMENT else 1
    return index if has_c and index < len(argv) else None
