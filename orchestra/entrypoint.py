"""Run a deployment's Python entrypoint: ``python -m orchestra.entrypoint FILE.py:FUNCTION``.

A deployment with ``entrypoint: flows/report.py:main`` renders to a process
job whose command runs this module; the process runner launches it like any
other command. It imports the file by path, reads the run's parameters from
``ORCHESTRA_PARAMETERS`` (a JSON object) and calls the function with them as
keyword arguments, awaiting it if it is a coroutine function.

The exit code decides the run's state: 0 when the function returns (its
return value is ignored, an int included: exit codes are not a return
protocol), 1 when it raises (traceback on stderr, so in the run's log), and
2 when the call cannot be made at all (file or function missing, parameters
that do not fit the signature): a usage error, not a failure of the code.
``sys.exit(n)`` inside the function still exits with ``n``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
_FALLBACK_MODULE_NAME = "__orchestra_entrypoint__"


class UsageError(Exception):
    """The function cannot be called as asked; the message says why (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Resolve, call, and map the outcome to an exit code."""
    _unbuffer_output()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        target = _parse_args(args)
        parameters = _read_parameters(os.environ.get("ORCHESTRA_PARAMETERS"))
        function = _load_function(*target)
        _check_binding(function, parameters, target[1])
    except UsageError as err:
        print(f"orchestra.entrypoint: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # the module's own import-time code raised: a failure of the code
        traceback.print_exc()
        return EXIT_FAILED
    return _call(function, parameters)


def _unbuffer_output() -> None:
    """Flush every line, so the run's log shows output while the function runs."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def _parse_args(args: list[str]) -> tuple[Path, str]:
    if len(args) != 1:
        raise UsageError("usage: python -m orchestra.entrypoint path/to/file.py:function")
    path, sep, name = args[0].rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise UsageError(f"{args[0]!r} is not an entrypoint; expected path/to/file.py:function")
    return Path(path), name


def _read_parameters(raw: str | None) -> dict[str, Any]:
    if raw is None or raw.strip() == "":
        return {}
    try:
        parameters = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"ORCHESTRA_PARAMETERS is not valid JSON: {err}") from None
    if not isinstance(parameters, dict):
        raise UsageError(f"ORCHESTRA_PARAMETERS must be a JSON object, got {type(parameters).__name__}")
    return parameters


def _load_function(path: Path, name: str) -> Callable[..., Any]:
    module = _import_file(path)
    function = getattr(module, name, None)
    if function is None:
        available = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        hint = f"; functions it defines: {', '.join(available)}" if available else ""
        raise UsageError(f"{path} has no function {name!r}{hint}")
    if not callable(function):
        raise UsageError(f"{path}:{name} is a {type(function).__name__}, not a function")
    return cast(Callable[..., Any], function)


def _import_file(path: Path) -> ModuleType:
    """Import ``path`` as a module, with its directory first on ``sys.path``.

    The directory goes first so that ``import helpers`` next to the file
    works, exactly as when running ``python path/to/file.py``. The module is
    named after the file (so pickling and sibling imports see one module)
    unless that name is already taken by an imported module.
    """
    resolved = path.resolve()
    if not resolved.is_file():
        raise UsageError(f"entrypoint file {str(path)!r} not found (resolved to {resolved})")
    sys.path.insert(0, str(resolved.parent))
    name = resolved.stem if resolved.stem.isidentifier() and resolved.stem not in sys.modules else _FALLBACK_MODULE_NAME
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.argv = [str(path)]
    spec.loader.exec_module(module)
    return module


def _check_binding(function: Callable[..., Any], parameters: dict[str, Any], name: str) -> None:
    """Refuse parameters the signature cannot take, before any of the function runs.

    Binding first separates "called wrongly" (exit 2) from a ``TypeError``
    raised inside the function (exit 1).
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return
    try:
        signature.bind(**parameters)
    except TypeError as err:
        raise UsageError(f"parameters do not fit {name}{signature}: {err}") from None


def _call(function: Callable[..., Any], parameters: dict[str, Any]) -> int:
    try:
        result = function(**parameters)
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK


async def _awaited(awaitable: Any) -> Any:
    """``asyncio.run`` takes coroutines only; this wraps any other awaitable."""
    return await awaitable


if __name__ == "__main__":
    sys.exit(main())
