"""Routes for runs: trigger, list with cursor paging, show, cancel.

Thin handlers over ``reconcile.operations`` (``create_manual_run``,
``cancel_run``: the very services ``orchestra run`` and ``orchestra
cancel`` call, so parameters are checked and reasons recorded the same way)
and the store's reads. Cursors wrap the store's ``Run.cursor`` in base64url:
opaque to clients and safe in a query string (an ISO offset's ``+`` is not).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import WithJsonSchema

from orchestra.api.errors import BAD_BODY, CONFLICT, INVALID, NOT_FOUND, InvalidQuery
from orchestra.api.schemas import RunCreate, RunDetailOut, RunOut, RunPage, StateName
from orchestra.api.settings import ApiSettings
from orchestra.api.shapes import masked_run_detail_json, masked_run_json, masked_runs_json
from orchestra.reconcile.operations import cancel_run, create_manual_run
from orchestra.store import Store

IsoTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
RunId = Annotated[str, Path(description="The run's id, or a unique prefix of at least 6 hex characters.")]


def runs_router(store: Store, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["runs"])

    @router.post("/deployments/{name}/runs", status_code=201, response_model=RunOut,
                 responses={**BAD_BODY, **NOT_FOUND, **INVALID}, summary="Start a run of a deployment now")
    def create_run(name: str, response: Response, body: RunCreate | None = None) -> dict[str, Any]:
        body = body or RunCreate()  # no body: the deployment's defaults
        run = create_manual_run(store, name, parameters=body.parameters, job_variables=body.job_variables,
                                now=settings.clock(), trigger="api")
        response.headers["Location"] = f"/api/v1/runs/{run.id}"
        return masked_run_json(store, run)

    @router.get("/runs", response_model=RunPage, responses=INVALID, summary="Runs, newest first, a page at a time")
    def list_runs(
        deployment: str | None = None,
        state: Annotated[list[StateName], Query(description="Repeat for several states.")] = [],  # noqa: B006
        pool: str | None = None,
        since: Annotated[IsoTime | None, Query(description="scheduledTime >= since (no zone: UTC).")] = None,
        until: Annotated[IsoTime | None, Query(description="scheduledTime < until (no zone: UTC).")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    ) -> dict[str, Any]:
        try:
            found = store.list_runs(deployment=deployment, state=set(state) or None, pool=pool,
                                    since=parse_time(since, "since"), until=parse_time(until, "until"),
                                    limit=limit + 1, before_cursor=decode_cursor(cursor))
        except ValueError as exc:
            raise InvalidQuery("cursor", str(exc)) from None
        page = found[:limit]
        more = len(found) > limit
        return {"runs": masked_runs_json(store, page), "next_cursor": encode_cursor(page[-1].cursor) if more else None}

    @router.get("/runs/{run_id}", response_model=RunDetailOut, responses=NOT_FOUND,
                summary="One run with its rendered job, variables patch and events")
    def get_run(run_id: RunId) -> dict[str, Any]:
        run = store.get_run(run_id)
        return masked_run_detail_json(store, run)

    @router.post("/runs/{run_id}/cancel", response_model=RunOut, responses={**NOT_FOUND, **CONFLICT},
                 summary="Cancel a run (409 if it already ended)")
    def cancel(run_id: RunId) -> dict[str, Any]:
        return masked_run_json(store, cancel_run(store, run_id))

    return router


def encode_cursor(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidQuery("cursor", "not a cursor this API returned") from None


def parse_time(text: str | None, name: str) -> datetime | None:
    """ISO 8601, no zone meaning UTC. Parsed here, not by pydantic, which would also take
    a bare number as seconds since 1970: not what anyone writing ``since=`` means."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(name, f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
