"""Map orchestra's exceptions to HTTP answers, at the edge and nowhere else.

Services raise ``NotFound``, ``Conflict`` and ``InvalidInput`` without
knowing about HTTP (``orchestra.errors``); ``install`` registers handlers
that turn them into 404, 409 and 422. A 422 names each wrong field the way
FastAPI's own validation errors do (``{"detail": [{"loc", "msg", "type"}]}``),
so a client handles one shape whether pydantic or a parameter schema
refused its input. ``RESPONSES`` documents these answers in OpenAPI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestra.api.schemas import Problem, ValidationProblem
from orchestra.errors import Conflict, FieldError, InvalidInput, NotFound, PathPart

# For ``responses=`` of routes: what each error status carries.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such resource or run."}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "Contradicts the current state."}}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"model": Problem, "description": "The body cannot be parsed."}}
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": ValidationProblem, "description": "Invalid input."}}
_MISSING = re.compile(r"missing required parameter '([^']+)'")
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong bearer token."},
}


class InvalidQuery(Exception):
    """A query parameter pydantic cannot check alone (a label selector, a cursor)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def field_problem(loc: Sequence[PathPart], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def invalid_input_problems(exc: InvalidInput) -> list[dict[str, Any]]:
    """Each error located in the request body: ``parameters.*`` or ``jobVariables.*``."""
    # InvalidInput says which stage refused in its message ("job ..." for the
    # render, whose errors always have a path); parameter errors are relative
    # to the parameters object.
    is_job = str(exc).startswith("job ")
    return [field_problem(_job_location(e) if is_job else _parameter_location(e), e.message, "invalid_input")
            for e in exc.errors]


def _parameter_location(error: FieldError) -> list[PathPart]:
    missing = _MISSING.match(error.message)
    path = list(error.path) or ([missing.group(1)] if missing else [])
    return ["body", "parameters", *path]


def _job_location(error: FieldError) -> list[PathPart]:
    path = list(error.path)
    if path[:1] == ["jobVariables"]:
        return ["body", *path]
    if path[:2] == ["spec", "parameters"]:
        return ["body", "parameters", *path[2:]]
    return ["body", *path]  # the deployment's own spec: the run's values made it fail to render


def install(app: FastAPI) -> None:
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(InvalidQuery, _invalid_query)


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    return JSONResponse({"detail": invalid_input_problems(exc)}, status_code=422)


async def _invalid_query(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidQuery)
    return JSONResponse({"detail": [field_problem(["query", exc.name], exc.message)]}, status_code=422)
