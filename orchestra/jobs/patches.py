"""A deployment's ``jobPatches``: RFC 6902 operations on the rendered job.

The last step of rendering (called by ``template``): patches reach what
job variables cannot, such as appending to a list the pool template
builds. They apply in order; the first one that cannot apply stops the
rest, because later operations usually build on earlier ones. Errors say
which part of the path is missing and what is there instead, rather than
``jsonpatch``'s message, which dumps the whole document.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from orchestra.errors import FieldError
from orchestra.jobs.merge import copy_json

_FULL_PATH_OPS = ("remove", "replace", "test")


def apply_patches(job: dict[str, Any], patches: Any) -> tuple[dict[str, Any], FieldError | None]:
    """The patched job (``job`` itself is never changed), or the job as far as it got and the first failure."""
    if not isinstance(patches, list):
        return job, FieldError(("spec", "jobPatches"), "must be a list of RFC 6902 operations")
    if not patches:
        return job, None
    document = copy_json(job)
    for index, operation in enumerate(patches):
        if not isinstance(operation, dict):
            return document, FieldError(("spec", "jobPatches", index), "must be an object with 'op' and 'path'")
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
            return document, FieldError(("spec", "jobPatches", index), _why(document, operation, exc))
    if not isinstance(document, dict):
        return job, FieldError(("spec", "jobPatches"), "the patched job must stay an object")
    return document, None


def _why(document: Any, operation: dict[str, Any], exc: Exception) -> str:
    """A plain explanation of why ``operation`` failed on ``document``."""
    op = operation.get("op")
    for key in ("from", "path"):
        pointer = operation.get(key)
        if not isinstance(pointer, str):
            continue
        problem = _missing(document, pointer, whole=key == "from" or op in _FULL_PATH_OPS)
        if problem:
            return f"cannot {op} {key} {pointer!r}: {problem}"
    if isinstance(exc, jsonpatch.JsonPatchTestFailed):
        pointer = operation.get("path")
        actual = jsonpointer.resolve_pointer(document, pointer, None)
        return f"test failed: {_pointer_text(pointer)} is {actual!r}, not {operation.get('value')!r}"
    return f"cannot apply {op!r}: {exc}"


def _missing(document: Any, pointer: str, whole: bool) -> str | None:
    """What is missing along ``pointer``: all of it if ``whole``, else its parent (``add`` creates the rest)."""
    try:
        parts = jsonpointer.JsonPointer(pointer).parts
    except jsonpointer.JsonPointerException as exc:
        return str(exc)
    needed = parts if whole else parts[:-1]
    value, problem = _walk(document, needed)
    if problem or whole:
        return problem
    parent = _pointer_text("/" + "/".join(needed))
    if not isinstance(value, (dict, list)):
        return f"{parent} is a {type(value).__name__}, not an object or a list"
    if isinstance(value, list) and parts[-1] != "-" and (not parts[-1].isdigit() or int(parts[-1]) > len(value)):
        return f"{parent} has {len(value)} items; use '-' to append"
    return None


def _walk(document: Any, parts: list[str]) -> tuple[Any, str | None]:
    """The value at ``parts``, or why there is none."""
    value = document
    for depth, part in enumerate(parts):
        problem = _step_problem(value, part, "/" + "/".join(parts[:depth]))
        if problem:
            return None, problem
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value, None


def _step_problem(value: Any, part: str, where: str) -> str | None:
    if isinstance(value, dict):
        if part in value:
            return None
        return f"{_pointer_text(where)} has no key {part!r} (it has: {', '.join(map(str, value)) or 'nothing'})"
    if isinstance(value, list):
        if part.isdigit() and int(part) < len(value):
            return None
        return f"{_pointer_text(where)} has {len(value)} items, no index {part!r}"
    return f"{_pointer_text(where)} is a {type(value).__name__}, not an object or a list"


def _pointer_text(pointer: Any) -> str:
    return "the rendered job" if pointer in ("/", "") else repr(pointer)
