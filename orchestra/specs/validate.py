"""Turn spec files into validated resources, or into every problem they have.

Called by planning (``plan``, ``apply``), the CLI's ``validate`` and the
daemon's watcher. It runs the whole pipeline in one pass and never stops at
the first error: YAML loading, the JSON Schema of each kind, then the checks
a schema cannot express (duplicates across files, references, cron, time
zones, durations, parameters against their schema, and a trial render of
every deployment's job), so that ``plan`` catches what would otherwise fail
at run time. Every problem is a ``Diagnostic`` pointing at file:line:col.
"""

from __future__ import annotations

import difflib
import hashlib
from functools import cache
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestra.diagnostics import Diagnostic
from orchestra.durations import parse_delay, parse_duration
from orchestra.errors import FieldError
from orchestra.jobs.defaults import default_template
from orchestra.jobs.template import check_template, render_errors
from orchestra.scheduling import parse_schedule
from orchestra.specs.loader import Document, LoadError, load_text, spec_files
from orchestra.specs.model import API_VERSION, Resource, diagnostic_at, resource_label, to_resource
from orchestra.specs.parameters import deployment_parameter_schema, parameter_errors, trial_parameters
from orchestra.specs.schema import KINDS, schema_errors


@dataclass
class SpecSet:
    """The outcome of reading a spec tree: resources and the problems found."""

    resources: list[Resource] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def of_kind(self, kind: str) -> dict[str, Resource]:
        return {r.name: r for r in self.resources if r.kind == kind}


def spec_root(paths: list[Path]) -> Path:
    """The directory relative job paths (workingDir, entrypoints) resolve against."""
    first = paths[0] if paths else Path(".")
    return first if first.is_dir() else first.parent


class ParseCache:
    """Parsed documents of each file, by content hash.

    The daemon re-reads the whole tree on every change but re-parses only the
    files whose bytes changed. Cached documents are shared between loads, so
    nothing downstream may mutate a document's values.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, list[Document]]] = {}

    def load(self, text: str, name: str) -> list[Document]:
        digest = hashlib.sha256(text.encode()).hexdigest()
        cached = self._entries.get(name)
        if cached and cached[0] == digest:
            return cached[1]
        documents = load_text(text, name)
        self._entries[name] = (digest, documents)
        return documents


def load_specs(paths: list[Path], *, cache: ParseCache | None = None,
               stored_hashes: dict[tuple[str, str], str] | None = None) -> SpecSet:
    """Read and validate every spec file under ``paths``.

    With ``stored_hashes`` (what the store holds, by kind and name), a
    resource identical to its stored version whose pool and queue are
    unchanged too skips the checks beyond its schema: it passed them when it
    was applied, and nothing it depends on moved. That keeps a no-change plan
    of a large tree close to the cost of parsing it.
    """
    result = load_resources(paths, cache=cache)
    pools = {r.name: r for r in result.resources if r.kind == "WorkPool"}
    root = spec_root(paths)
    result.resources = [with_derived_parameters(r, pools, root, result.diagnostics) for r in result.resources]
    trusted = unchanged_resources(result.resources, stored_hashes) if stored_hashes else set()
    result.diagnostics.extend(semantic_diagnostics([r for r in result.resources if (r.kind, r.name) not in trusted]
                                                   , all_resources=result.resources))
    result.diagnostics.sort()
    return result


def load_resources(paths: list[Path], *, cache: ParseCache | None = None) -> SpecSet:
    """Only the first stage: YAML, the kinds' schemas and duplicates, no cross-checks.

    Enough for tools that look at one file on its own (``orchestra schedule FILE``).
    """
    result = SpecSet()
    documents: list[Document] = []
    for path in spec_files(paths):
        name = str(path)
        result.files.append(name)
        text = _read(path, result)
        if text is None:
            continue
        try:
            documents.extend(cache.load(text, name) if cache else load_text(text, name))
        except LoadError as exc:
            result.diagnostics.append(exc.diagnostic)
    candidates = [r for r in (_checked(doc, result.diagnostics) for doc in documents) if r]
    result.resources = _without_duplicates(candidates, result.diagnostics)
    return result


def _read(path: Path, result: SpecSet) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.diagnostics.append(Diagnostic(str(path), 1, 1, None, None, f"cannot read file: {exc}"))
        return None


def _checked(document: Document, diagnostics: list[Diagnostic]) -> Resource | None:
    """The document as a Resource if its envelope and schema are valid."""
    value = document.value
    label = resource_label(value)
    if not isinstance(value, dict):
        diagnostics.append(diagnostic_at(document, (), "a spec document must be a mapping "
                                         "with apiVersion, kind, metadata and spec", None))
        return None
    kind_problem = _kind_problem(value)
    if kind_problem:
        diagnostics.append(diagnostic_at(document, kind_problem.path, kind_problem.message, label))
        return None
    errors = schema_errors(value["kind"], value)
    diagnostics.extend(diagnostic_at(document, e.path, e.message, label) for e in errors)
    return None if errors else to_resource(document)


def _kind_problem(value: dict[str, Any]) -> FieldError | None:
    if value.get("apiVersion") != API_VERSION:
        return FieldError(("apiVersion",), f"expected apiVersion {API_VERSION!r}, got {value.get('apiVersion')!r}")
    kind = value.get("kind")
    if kind not in KINDS:
        hint = difflib.get_close_matches(str(kind), KINDS, n=1)
        message = f"unknown kind {kind!r}; " + (f"did you mean {hint[0]!r}?" if hint else f"expected one of {', '.join(KINDS)}")
        return FieldError(("kind",), message)
    return None


def _without_duplicates(resources: list[Resource], diagnostics: list[Diagnostic]) -> list[Resource]:
    """Keep the first of each kind/name; report every later one with both places."""
    first: dict[tuple[str, str], Resource] = {}
    kept = []
    for resource in resources:
        key = (resource.kind, resource.name)
        if key in first:
            other = first[key]
            message = f"duplicate {resource.ref}: also defined at {other.source}"
            diagnostics.append(resource.diagnostic(FieldError(("metadata", "name"), message)))
            diagnostics.append(other.diagnostic(FieldError(("metadata", "name"), f"duplicate {resource.ref}: "
                                                           f"also defined at {resource.source}")))
            continue
        first[key] = resource
        kept.append(resource)
    return kept


def unchanged_resources(resources: list[Resource], stored: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """Resources identical to their stored version, as are the pool and queue they use."""
    same = {(r.kind, r.name) for r in resources if stored.get((r.kind, r.name)) == r.content_hash}

    def depends_unchanged(resource: Resource) -> bool:
        pool = resource.spec.get("pool")
        queue = resource.spec.get("queue")
        return ((pool is None or ("WorkPool", pool) in same)
                and (not queue or queue == "default" or ("WorkQueue", queue) in same))

    return {(r.kind, r.name) for r in resources if (r.kind, r.name) in same and depends_unchanged(r)}


def semantic_diagnostics(resources: list[Resource], *, all_resources: list[Resource] | None = None) -> list[Diagnostic]:
    """The checks beyond JSON Schema of ``resources``; references resolve among ``all_resources``."""
    everything = resources if all_resources is None else all_resources
    pools = {r.name: r for r in everything if r.kind == "WorkPool"}
    queues = {r.name: r for r in everything if r.kind == "WorkQueue"}
    diagnostics: list[Diagnostic] = []
    for resource in resources:
        checks = _CHECKS[resource.kind](resource, pools, queues)
        diagnostics.extend(resource.diagnostic(error) for error in checks)
    return diagnostics


def resource_field_errors(resource: Resource, all_resources: list[Resource]) -> list[FieldError]:
    """``semantic_diagnostics`` of one resource as field errors: for a document that has no
    file to point into (one sent to the API, whose errors name body fields instead)."""
    pools = {r.name: r for r in all_resources if r.kind == "WorkPool"}
    queues = {r.name: r for r in all_resources if r.kind == "WorkQueue"}
    return list(_CHECKS[resource.kind](resource, pools, queues))


def with_derived_parameters(resource: Resource, pools: dict[str, Resource], root: Path,
                            diagnostics: list[Diagnostic]) -> Resource:
    """An entrypoint deployment gets the parameter schema of its function's signature.

    It is stored with the spec (and so shown by ``plan``) because later checks
    of a manual run's parameters happen far from the spec files; an edited
    signature then shows in the plan as the change it is.
    """
    spec = resource.spec
    if resource.kind != "Deployment" or "entrypoint" not in spec or "parameterSchema" in spec:
        return resource
    pool = pools.get(spec["pool"])
    if pool is None:
        return resource
    try:
        schema = deployment_parameter_schema(spec, pool.spec["type"], root)
    except FieldError as error:
        diagnostics.append(resource.diagnostic(error))
        return resource
    if schema is None:
        return resource
    return replace(resource, spec={**spec, "parameterSchema": schema})


def pool_template(pool_spec: dict[str, Any]) -> dict[str, Any]:
    """The pool's base job template, or its type's default."""
    return pool_spec.get("baseJobTemplate") or _default_template(pool_spec["type"])


@cache
def _default_template(pool_type: str) -> dict[str, Any]:
    """Shared, so never mutate it: rendering copies what it changes."""
    return default_template(pool_type)


def _pool_errors(pool: Resource, pools: dict, queues: dict) -> Iterator[FieldError]:
    template = pool.spec.get("baseJobTemplate")
    if template:
        for error in check_template(template):
            yield error.prefixed(("spec", "baseJobTemplate"))


def _queue_errors(queue: Resource, pools: dict, queues: dict) -> Iterator[FieldError]:
    error = _reference_error(("spec", "pool"), "WorkPool", queue.spec["pool"], pools)
    if error:
        yield error


def _deployment_errors(deployment: Resource, pools: dict, queues: dict) -> list[FieldError]:
    spec = deployment.spec
    errors = [*_command_or_entrypoint(spec), *_duration_errors(spec), *schedule_errors(spec)]
    pool_error = _reference_error(("spec", "pool"), "WorkPool", spec["pool"], pools)
    if pool_error:
        return [*errors, pool_error]
    pool = pools[spec["pool"]]
    errors += [*_queue_reference(spec, queues), *parameter_errors(deployment), *_entrypoint_in_pool(spec, pool)]
    if not errors:  # a trial render only makes sense once the inputs are sound
        errors += render_errors(pool_template(pool.spec), deployment.as_document(),
                                parameters=trial_parameters(spec))
    return errors


def _entrypoint_in_pool(spec: dict[str, Any], pool: Resource) -> Iterator[FieldError]:
    """An entrypoint runs with the daemon's own Python and orchestra: only in a process pool."""
    if "entrypoint" in spec and pool.spec["type"] != "process":
        yield FieldError(("spec", "entrypoint"), f"a Python entrypoint runs only in a process pool, and "
                         f"WorkPool/{pool.name} is a {pool.spec['type']} pool: give a 'command' instead, "
                         "e.g. [python, path/file.py] with the parameters from $ORCHESTRA_PARAMETERS")


def _command_or_entrypoint(spec: dict[str, Any]) -> Iterator[FieldError]:
    if ("command" in spec) == ("entrypoint" in spec):
        which = "both" if "command" in spec else "neither"
        yield FieldError(("spec",), f"a deployment needs exactly one of 'command' and 'entrypoint' (it has {which})")


# A retry's delay may be zero (retry at once, the default); the others must be positive.
_DURATION_FIELDS = ((("timeout",), parse_duration), (("retries", "delay"), parse_delay),
                    (("missedRuns", "startingDeadline"), parse_duration))


def _duration_errors(spec: dict[str, Any]) -> Iterator[FieldError]:
    for path, parse in _DURATION_FIELDS:
        value: Any = spec
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        try:
            parse(value)
        except ValueError as exc:
            yield FieldError(("spec",) + path, str(exc))


def schedule_errors(spec: dict[str, Any]) -> Iterator[FieldError]:
    identities: dict[str, int] = {}
    for index, raw in enumerate(spec.get("schedules") or []):
        try:
            schedule = parse_schedule(raw)
        except FieldError as error:
            yield error.prefixed(("spec", "schedules", index))
            continue
        if schedule.identity in identities:
            yield FieldError(("spec", "schedules", index), f"same schedule as schedules[{identities[schedule.identity]}] "
                             "(give one of them a distinct 'name')")
        identities.setdefault(schedule.identity, index)


def _queue_reference(spec: dict[str, Any], queues: dict[str, Resource]) -> Iterator[FieldError]:
    name = spec.get("queue")
    if not name or name == "default" and name not in queues:
        return
    error = _reference_error(("spec", "queue"), "WorkQueue", name, queues)
    if error:
        yield error
    elif queues[name].spec["pool"] != spec["pool"]:
        yield FieldError(("spec", "queue"), f"WorkQueue/{name} belongs to pool {queues[name].spec['pool']!r}, "
                         f"not to {spec['pool']!r}")


def _reference_error(path: tuple[str, ...], kind: str, name: str, known: Iterable[str]) -> FieldError | None:
    names = list(known)
    if name in names:
        return None
    hint = difflib.get_close_matches(name, names, n=1)
    message = f"{kind}/{name} not found"
    message += f"; did you mean {hint[0]!r}?" if hint else (f"; defined: {', '.join(sorted(names))}" if names else "")
    return FieldError(path, message)


_CHECKS = {"WorkPool": _pool_errors, "WorkQueue": _queue_errors, "Deployment": _deployment_errors}
