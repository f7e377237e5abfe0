"""``RemoteBackend``: the commands' ``Backend`` over a daemon's HTTP API (``--api-url``).

Every method is one route (or a few pages of one) of ``/api/v1``, called
through ``orchestra.client.ApiClient``, which turns 404, 409 and 422 back
into ``NotFound``, ``Conflict`` and ``InvalidInput``: a command fails with
the same words and exit code as against the store. Answers are reduced to
the shapes ``LocalBackend`` returns (the API adds status fields to
resources), so the printed output is the same too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestra.cli.backends import KINDS, PlanOutcome, RunQuery
from orchestra.cli.spec_payload import spec_payload
from orchestra.client import ApiClient
from orchestra.diagnostics import Diagnostic, SpecError
from orchestra.errors import FieldError, InvalidInput

NOUNS = {"WorkPool": "pools", "WorkQueue": "queues", "Deployment": "deployments"}
RESOURCE_KEYS = ("kind", "name", "paused", "labels", "source", "manager", "generation", "spec")
RUNS_PAGE = 1000  # the API's largest page
LOG_PAGE = 1024 * 1024
MAX_LOG_PAGES = 100_000  # a bound, not a limit anyone meets: 100 GB of log
_MISSING = re.compile(r"missing required parameter '([^']+)'")


def resource_shape(view: dict[str, Any]) -> dict[str, Any]:
    """An API resource view as ``resource_json`` has it: the status fields the API adds left out."""
    keys = RESOURCE_KEYS[:2] + (("pool", "queue") if view["kind"] == "Deployment" else ()) + RESOURCE_KEYS[2:]
    return {key: view[key] for key in keys}


def _segment(value: str) -> str:
    """A name as one URL path segment (a schedule's canonical timing has slashes and spaces)."""
    return quote(value, safe="")


class RemoteBackend:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def list_resources(self, kind: str | None = None) -> list[dict[str, Any]]:
        kinds = [kind] if kind else sorted(KINDS)  # the store's order: by kind, then name
        return [resource_shape(view) for k in kinds for view in self.client.get(f"/{NOUNS[k]}")]

    def get_resource(self, kind: str, name: str) -> dict[str, Any]:
        return resource_shape(self.client.get(f"/{NOUNS[kind]}/{_segment(name)}"))

    def spec_status(self) -> dict[str, Any] | None:
        status = self.client.get("/specs/status")["specs"]
        return status if isinstance(status, dict) else None

    def daemons(self) -> list[dict[str, Any]]:
        return list(self.client.get("/daemons")["daemons"])

    def workers(self) -> list[dict[str, Any]]:
        return list(self.client.get("/workers")["workers"])

    def list_runs(self, query: RunQuery) -> list[dict[str, Any]]:
        """Newest first, a page at a time until ``limit`` runs or the last page."""
        found: list[dict[str, Any]] = []
        cursor = None
        while len(found) < query.limit:
            page = self.client.get("/runs", deployment=query.deployment, state=sorted(query.states),
                                   pool=query.pool, limit=min(RUNS_PAGE, query.limit - len(found)), cursor=cursor)
            found += page["runs"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return found

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.client.get(f"/runs/{_segment(run_id)}")

    def create_run(self, deployment: str, parameters: dict[str, Any],
                   job_variables: dict[str, Any]) -> dict[str, Any]:
        body = {"parameters": parameters, "jobVariables": job_variables}
        with _local_wording():
            return self.client.post(f"/deployments/{_segment(deployment)}/runs", json=body)

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self.client.post(f"/runs/{_segment(run_id)}/cancel")

    def set_paused(self, noun: str, name: str, paused: bool) -> dict[str, Any]:
        verb = "pause" if paused else "resume"
        if noun == "schedule":
            deployment, _, schedule = name.partition("/")
            answer = self.client.post(f"/deployments/{_segment(deployment)}/schedules/{_segment(schedule)}/{verb}")
            return {"kind": "Schedule", "name": f"{answer['deployment']}/{answer['schedule']}",
                    "paused": answer["paused"]}
        return resource_shape(self.client.post(f"/{noun}s/{_segment(name)}/{verb}"))

    def read_log(self, run_id: str) -> bytes:
        """The log as it is now, read a page at a time."""
        chunks: list[bytes] = []
        offset = 0
        for _ in range(MAX_LOG_PAGES):
            page = self.client.get(f"/runs/{_segment(run_id)}/logs", offset=offset, limit=LOG_PAGE)
            chunks.append(page["text"].encode())
            offset = page["nextOffset"]
            if page["eof"]:
                break
        return b"".join(chunks)

    def follow_log(self, run_id: str) -> Iterator[bytes]:
        """The server's stream: it ends once the run has ended and its log is complete."""
        yield from self.client.stream_bytes(f"/runs/{_segment(run_id)}/logs/stream")

    def plan(self, paths: list[Path], *, prune: bool) -> PlanOutcome:
        return self._specs("/specs/plan", paths, prune)

    def apply(self, paths: list[Path], *, prune: bool) -> PlanOutcome:
        return self._specs("/specs/apply", paths, prune)

    def render(self, deployment: str, parameters: dict[str, Any],
               job_variables: dict[str, Any]) -> dict[str, Any]:
        body = {"parameters": parameters, "jobVariables": job_variables}
        with _local_wording():
            return self.client.post(f"/deployments/{_segment(deployment)}/render", json=body)

    def export_documents(self, kind: str | None, name: str | None) -> list[dict[str, Any]]:
        return self.client.get("/export", kind=kind, name=name)

    def close(self) -> None:
        self.client.close()

    def _specs(self, route: str, paths: list[Path], prune: bool) -> PlanOutcome:
        answer = self.client.post(route, json=spec_payload(paths, prune=prune))
        if not answer["valid"]:
            raise SpecError([Diagnostic(**error) for error in answer["errors"]])
        return PlanOutcome(answer["plan"], answer["text"])


@contextmanager
def _local_wording() -> Iterator[None]:
    """Re-word a 422 about a run's input the way the local service words it.

    The API locates each problem in the request body (``parameters.n``);
    ``workers.rendering`` says ``parameter n: ...`` or ``job ...: ...``.
    """
    try:
        yield
    except InvalidInput as exc:
        raise _reworded(exc.errors) from None


def _reworded(errors: list[FieldError]) -> InvalidInput:
    if all(e.path[:1] == ("parameters",) for e in errors):
        return InvalidInput([_parameter_error(e) for e in errors], "parameter")
    return InvalidInput(errors, "job")


def _parameter_error(error: FieldError) -> FieldError:
    path = error.path[1:]
    missing = _MISSING.match(error.message)
    if missing and path == (missing.group(1),):
        path = ()  # the local service names a missing parameter in the message only
    return FieldError(path, error.message)
