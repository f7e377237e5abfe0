"""Run logs over HTTP: a page at a time by byte offset, or followed as a stream.

Both read ``<state_dir>/logs/<run-id>.log`` with ``runners.logs.read_log``,
as ``orchestra logs`` does. A page never ends inside a UTF-8 character: the
incomplete tail is left for the next page (``nextOffset`` points at it), so
pages concatenate to the exact text. The stream sends raw bytes until the
run is terminal and its file stopped growing; it asks whether the run ended
*before* each read, so the last output written before the end is never
lost (the same rule as ``runners.logs.follow_log``, which blocks a thread
and so is not used here).
"""

# No "from __future__ import annotations": FastAPI must resolve the local dependency in
# ``stream``'s signature, which a string annotation would hide from it.

import asyncio
import codecs
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from orchestra.api.errors import INVALID, NOT_FOUND
from orchestra.api.routes_runs import RunId
from orchestra.api.schemas import LogPage
from orchestra.api.settings import ApiSettings
from orchestra.runners.logs import READ_CHUNK, read_log
from orchestra.store import Run, Store

DEFAULT_PAGE = 64 * 1024
MAX_PAGE = 1024 * 1024


class TextStream(StreamingResponse):
    media_type = "text/plain; charset=utf-8"


def decode_page(data: bytes, *, final: bool) -> tuple[str, int]:
    """Text of ``data`` and how many bytes it used (all but an incomplete trailing character)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=final)
    used = len(data) - len(decoder.getstate()[0])
    if used == 0 and data:  # a page smaller than one character: give it as is rather than never advance
        return data.decode("utf-8", errors="replace"), len(data)
    return text, used


def logs_router(store: Store, settings: ApiSettings, *, closing: threading.Event) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["runs"])

    def log_path(run_id: str) -> Path:
        return settings.log_dir / f"{run_id}.log"

    def existing_run(run_id: RunId) -> Run:
        """A dependency, so that an unknown run is a 404 before a stream's headers go out."""
        return store.get_run(run_id)

    @router.get("/runs/{run_id}/logs", response_model=LogPage, responses={**NOT_FOUND, **INVALID},
                summary="A page of a run's output (stdout and stderr, in order)")
    def read_page(run_id: RunId, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Bytes.")] = DEFAULT_PAGE,
                  ) -> dict[str, Any]:
        run = store.get_run(run_id)
        data, _ = read_log(log_path(run.id), offset, limit)
        eof = len(data) < limit
        text, used = decode_page(data, final=eof)
        return {"runId": run.id, "offset": offset, "nextOffset": offset + used, "text": text, "eof": eof,
                "state": run.state}

    @router.get("/runs/{run_id}/logs/stream", response_class=TextStream, responses=NOT_FOUND,
                summary="A run's output as it is written, until the run ends")
    async def stream(run: Annotated[Run, Depends(existing_run)],
                     offset: Annotated[int, Query(ge=0)] = 0) -> AsyncIterator[bytes]:
        path, position = log_path(run.id), offset
        while not closing.is_set():
            ended = (await to_thread.run_sync(store.get_run, run.id)).terminal
            chunk, position = await to_thread.run_sync(read_log, path, position, READ_CHUNK)
            if chunk:
                yield chunk
            elif ended:
                return
            else:
                await asyncio.sleep(settings.poll_interval)

    return router
