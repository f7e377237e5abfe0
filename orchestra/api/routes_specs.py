"""Routes for the CLI over the API: plan and apply spec files sent by the
client, the daemon's spec status, and the render of a deployment's job.

``orchestra plan|apply PATH --api-url URL`` reads the spec files on the
client's machine and sends their text (``cli.spec_payload``); the server
validates and plans them against its store with the very service the local
commands call (``reconcile.apply.plan_specs``), so diagnostics, the plan
and the stored ``source`` keep the client's file paths and lines.

``plan_specs`` reads files, so the texts are written into a temporary
mirror of the client's tree (relative layout kept, so an entrypoint's
Python file sent along is found where ``spec_root`` expects it) and
``ClientNames`` parses each under the client's name. Invalid specs are an
answer, not a refused request: ``{"valid": false, "errors": [...]}`` with
status 200, as ``GET /api/v1/plan`` answers for the daemon's own tree.
The plan comes as its documented JSON and as the text ``orchestra plan``
prints (rich markup), both made by ``orchestra.planning``: a remote CLI
prints them as they are, so its output is the local one by construction.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orchestra.api.errors import BAD_BODY, CONFLICT, INVALID, NOT_FOUND
from orchestra.api.schemas import DiagnosticOut, RunCreate, UnreachableOut
from orchestra.api.settings import ApiSettings
from orchestra.diagnostics import Diagnostic, SpecError
from orchestra.errors import Conflict
from orchestra.planning.render import render_plan
from orchestra.reconcile.apply import PlanResult, apply_plan, plan_specs
from orchestra.reconcile import presence
from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.reconcile.jobs import prepare_job
from orchestra.specs.loader import Document
from orchestra.specs.validate import ParseCache
from orchestra.store import Store

MAX_FILES = 10_000
MAX_TEXT = 10 * 1024 * 1024  # characters per file
ClientPath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]


class SpecFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: ClientPath = Field(description="The file's path as the client names it (kept in errors and sources).")
    text: str = Field(max_length=MAX_TEXT, description="The file's content (UTF-8).")


class SpecsIn(BaseModel):
    """Spec files read on the client, and the PATH arguments they were found under."""

    model_config = ConfigDict(extra="forbid")
    files: list[SpecFile] = Field(max_length=MAX_FILES, description=(
        "Every spec file found under paths, plus the Python files of entrypoint deployments."))
    paths: list[ClientPath] | None = Field(default=None, max_length=MAX_FILES, description=(
        "The PATH arguments as given (directories are searched like a local plan does); default: the files."))
    prune: bool = Field(default=False, description="Also plan deleting spec-managed resources absent from the files.")


class SpecsOut(BaseModel):
    valid: bool = Field(description="False: the files have errors (listed) and nothing was planned or changed.")
    errors: list[DiagnosticOut] = Field(default_factory=list)
    plan: dict[str, Any] | None = Field(default=None, description="The plan as `orchestra plan -o json` prints it.")
    text: str | None = Field(default=None, description="The plan as `orchestra plan` prints it (rich markup).")
    applied: bool = Field(default=False, description="Whether the plan was written to the store.")


class SpecStatusOut(BaseModel):
    specs: dict[str, Any] | None = Field(description=(
        "The daemon's last check of its spec tree (ok, checkedAt, resources, errors); null before the first."))


class DaemonOut(BaseModel):
    host: str
    pid: int
    paths: list[str] = Field(description="The spec paths it watches.")
    workers: str = Field(description="The pools it runs jobs of, as its `--workers` said (`none`: it runs none).")
    startedAt: str
    seenAt: str = Field(description="When its loop last said it came round (every 10 s), or when it stopped.")
    stoppedAt: str | None
    goneAt: str | None = Field(None, description="When a later daemon on its host found it ended without stopping.")
    unreachable: list[UnreachableOut] = Field([], description=(
        "Pools whose runner (a Docker engine) it cannot reach, as of its last write: their runs wait."))
    state: Literal["running", "stopped", "gone", "unresponsive"] = Field(description=(
        "`gone`: ended without stopping, found so by a later daemon on its host; `unresponsive`: "
        "neither seen for 30 s nor stopped: killed, frozen, or its host gone."))
    schedules: Literal["materializes", "stands by"] | None = Field(None, description=(
        "Whether it materializes the schedules (one daemon at a time does) or stands by to take "
        "over; null before its first look, or when it stopped."))


class DaemonsOut(BaseModel):
    daemons: list[DaemonOut] = Field(description="Every daemon seen in the last day, the one seen last first.")


class RenderOut(BaseModel):
    deployment: str
    pool: str
    job: Any = Field(description="The rendered job, as `orchestra render -o json` prints it.")
    variables_patch: Any = Field(alias="variablesPatch",
                                 description="RFC 6902 patch of the job variables against the pool's defaults.")


def specs_router(store: Store, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/specs/plan", response_model=SpecsOut, responses={**BAD_BODY, **INVALID}, tags=["plan"],
                 summary="Plan spec files sent by the client against the store (read only)")
    def plan(body: SpecsIn) -> dict[str, Any]:
        return _planned(store, settings, body, apply=False)

    @router.post("/specs/apply", response_model=SpecsOut, responses={**BAD_BODY, **INVALID, **CONFLICT}, tags=["plan"],
                 summary="Apply spec files sent by the client: the store matches them, in one transaction")
    def apply(body: SpecsIn) -> dict[str, Any]:
        return _planned(store, settings, body, apply=True)

    @router.get("/specs/status", response_model=SpecStatusOut, responses=INVALID, tags=["plan"],
                summary="The daemon's view of its spec tree: valid, or the errors keeping the last good state")
    def spec_status() -> dict[str, Any]:
        return {"specs": store.get_status(SPEC_STATUS)}

    @router.get("/daemons", response_model=DaemonsOut, responses=INVALID, tags=["plan"],
                summary="The daemons serving this store: running, stopped, or gone quiet without stopping")
    def daemons() -> dict[str, Any]:
        return {"daemons": presence.daemons(store, settings.clock())}

    @router.post("/deployments/{name}/render", response_model=RenderOut, response_model_by_alias=True,
                 responses={**BAD_BODY, **NOT_FOUND, **INVALID}, tags=["deployments"],
                 summary="The job a run of the deployment would get, with these parameters and job variables")
    def render(name: str, body: RunCreate | None = None) -> dict[str, Any]:
        body = body or RunCreate()
        prepared = prepare_job(store, name, parameters=body.parameters, job_variables=body.job_variables)
        return {"deployment": prepared.deployment.name, "pool": prepared.pool.name, "job": prepared.rendered.job,
                "variablesPatch": prepared.rendered.variables_patch}

    return router


def _planned(store: Store, settings: ApiSettings, body: SpecsIn, *, apply: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orchestra-specs-") as tmp:
        mirror = ClientTree(Path(tmp), [f.path for f in body.files] + list(body.paths or []))
        arguments = body.paths or [f.path for f in body.files]
        unwritable = mirror.write(body.files) + mirror.make_directories(arguments)
        if unwritable:
            return {"valid": False, "errors": [d.to_json() for d in unwritable]}
        paths = [mirror.local(p) for p in arguments]
        try:
            result = plan_specs(store, paths, prune=body.prune, now=settings.clock(), cache=ClientNames(mirror))
        except SpecError as exc:
            return {"valid": False, "errors": [mirror.scrubbed(d).to_json() for d in exc.diagnostics]}
    if apply:
        _refuse_pruning_everything(result, body.prune)
        apply_plan(store, result)
    text = render_plan(result.plan, verb="will" if apply else "would")
    return {"valid": True, "plan": result.plan.to_json(), "text": text, "applied": apply}


def _refuse_pruning_everything(result: PlanResult, prune: bool) -> None:
    """Files that define nothing, applied with prune, would delete every spec-managed resource:
    over the network that is far likelier a wrong or empty PATH than an intent."""
    deletes = result.plan.summary["delete"]
    if prune and not result.specs.resources and deletes:
        raise Conflict(f"the files define no resources: applying them with prune would delete all {deletes} "
                       "spec-managed resources; refusing: check the PATH")


class ClientTree:
    """A temporary directory holding the client's files at their relative places.

    Paths are normalised and placed under as many levels as the deepest
    leading ``..`` needs, so every one stays inside the directory and
    ``a/../b`` lands where the client's ``b`` is relative to its ``a``.
    Absolute client paths go under ``abs/``.
    """

    def __init__(self, base: Path, client_paths: list[str]) -> None:
        ups = max((_leading_ups(p) for p in client_paths), default=0)
        self.base = base
        self.root = base.joinpath(*(["up"] * ups)) if ups else base
        self.names: dict[str, str] = {}  # local path -> the client's name

    def local(self, client_path: str) -> Path:
        normal = os.path.normpath(client_path)
        relative = PurePosixPath(normal)
        if relative.is_absolute():
            return self.base / "abs" / relative.relative_to("/")
        return Path(os.path.normpath(self.root / relative))

    def write(self, files: list[SpecFile]) -> list[Diagnostic]:
        """Write every file; a name the server's file system cannot hold is a diagnostic of that file."""
        problems = []
        for spec_file in files:
            path = self.local(spec_file.path)
            self.names[str(path)] = spec_file.path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(spec_file.text, encoding="utf-8")
            except (OSError, UnicodeEncodeError) as exc:
                problems.append(_unstorable(spec_file.path, exc))
        return problems

    def make_directories(self, client_paths: list[str]) -> list[Diagnostic]:
        """A PATH argument no file was sent for is a directory without spec files, as on the client."""
        problems = []
        for client_path in client_paths:
            try:
                self.local(client_path).mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                continue  # a file sent under this name: fine
            except OSError as exc:
                problems.append(_unstorable(client_path, exc))
        return problems

    def client_name(self, local: str) -> str:
        return self.names.get(local, local)

    def scrubbed(self, diagnostic: Diagnostic) -> Diagnostic:
        """The diagnostic under the client's file name, without the server's temporary directory."""
        message = diagnostic.message.replace(str(self.root) + os.sep, "").replace(str(self.base) + os.sep, "")
        return replace(diagnostic, file=self.client_name(diagnostic.file), message=message)


class ClientNames(ParseCache):
    """Parse each mirrored file under the client's name, so positions and sources name the client's file."""

    def __init__(self, tree: ClientTree) -> None:
        super().__init__()
        self.tree = tree

    def load(self, text: str, name: str) -> list[Document]:
        return super().load(text, self.tree.client_name(name))


def _unstorable(client_path: str, exc: Exception) -> Diagnostic:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return Diagnostic(client_path, 1, 1, None, None, f"cannot store this path on the server: {reason}")


def _leading_ups(client_path: str) -> int:
    parts = PurePosixPath(os.path.normpath(client_path)).parts
    count = 0
    while count < len(parts) and parts[count] == "..":
        count += 1
    return count
