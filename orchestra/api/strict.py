"""Refuse query parameters a route does not declare.

A typo such as ``?stat=Running`` would otherwise be ignored and answer with
every run, which looks right and is not; unknown fields are errors
everywhere else in orchestra (fail closed), so here too. A dependency of
every router (``app.create_app``): it reads the matched route's declared
query parameters and answers 422 naming each unknown one, in the same shape
as FastAPI's own validation errors.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError


def reject_unknown_query(request: Request) -> None:
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([
            {"loc": ("query", name), "msg": f"unknown query parameter {name!r}", "type": "extra_forbidden"}
            for name in unknown
        ])


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route's handler and its dependencies declare."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
