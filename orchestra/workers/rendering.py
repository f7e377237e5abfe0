"""A claimed run's job, rendered from the deployment and pool the worker already holds.

``Launcher`` calls ``render_run`` for every run it starts, with resources
from ``ResourceCache``, so rendering costs no store read. ``render_with``
is the one place a job is rendered from stored resources: parameter defaults
overlaid by the run's own and checked against the schema, then the pure
``jobs.template.render_job``; ``reconcile.jobs.prepare_job`` (``orchestra
render``, manual runs) calls it too.

Secrets: ``render_with`` never resolves a ``secretRef`` (``orchestra render``
and manual runs happen on the server, which need not have the worker's
environment); ``render_run`` does, on the worker that launches the job, from
its own environment and files. The job the runner gets comes from
``RenderedJob.runnable()``; the run stores ``RenderedJob.job``, masked.
"""

from __future__ import annotations

import os
from typing import Any

from orchestra.errors import FieldError, InvalidInput
from orchestra.jobs.template import RenderedJob, render_job
from orchestra.specs.model import API_VERSION
from orchestra.specs.parameters import validate_parameters
from orchestra.specs.validate import pool_template
from orchestra.store import PENDING, Run, Store, StoredResource


def render_run(deployment: StoredResource, pool: StoredResource, run: Run, python: str) -> RenderedJob:
    """The job of ``run``; ``InvalidInput`` when its parameters or job variables do not fit."""
    # The slot, not the retry's due time: every attempt of a slot sees the same
    # ORCHESTRA_SCHEDULED_TIME, so a job keyed on it stays idempotent across retries.
    scheduled = (run.slot_time or run.scheduled_time).isoformat()
    rendered = render_with(deployment, pool, parameters=run.parameters, job_variables=run.job_variables,
                           run_id=run.id, scheduled_time=scheduled, python=python)[1]
    problems = rendered.resolve_secret_refs(os.environ, _read_text)
    if problems:
        # Named by reference and where it is used, never by value; a retry on
        # the same worker would meet the same missing variable or file.
        raise InvalidInput(problems, "secret")
    return rendered


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def run_parameters(deployment: StoredResource, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid by the run's own parameters, checked against the schema."""
    parameters = {**(deployment.spec.get("parameters") or {}), **overrides}
    schema = deployment.spec.get("parameterSchema")
    if schema is not None:
        errors = validate_parameters(schema, parameters)
        if errors:
            raise InvalidInput(errors, "parameter")
    return parameters


def render_with(deployment: StoredResource, pool: StoredResource, *, parameters: dict[str, Any],
                job_variables: dict[str, Any] | None, run_id: str, scheduled_time: str | None,
                python: str) -> tuple[dict[str, Any], RenderedJob]:
    """The run's final parameters and its rendered job; ``InvalidInput`` when they do not fit."""
    final = run_parameters(deployment, parameters)
    try:
        rendered = render_job(pool_template(pool.spec), _document(deployment), parameters=final,
                              job_variables=job_variables, run_id=run_id, scheduled_time=scheduled_time,
                              python=python)
    except FieldError as error:
        raise InvalidInput([error], "job") from None
    return final, rendered


def _document(resource: StoredResource) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": resource.kind, "metadata": resource.metadata, "spec": resource.spec}


def render_as_claimed(store: Store, run: Run, python: str) -> RenderedJob | None:
    """The job this attempt of ``run`` started with, rendered again, where that cannot
    differ: its deployment and pool unchanged since the attempt was claimed (a start
    renders from them as they are then, never from older ones), and its parameters,
    job variables and slot are the run's own. None where it could differ, or does
    not render now (a secret gone from this worker's environment): then unknown.

    For a job a dead daemon started but never recorded (``workers.adoption``).
    """
    claimed = max((event.time for event in store.events(run.id)
                   if event.to_state == PENDING and event.attempt == run.attempt), default=None)
    deployment = store.get_resources("Deployment", [run.deployment]).get(run.deployment)
    pool = store.get_resources("WorkPool", [run.pool]).get(run.pool)
    if claimed is None or deployment is None or pool is None or max(deployment.updated_at, pool.updated_at) > claimed:
        return None
    try:
        return render_run(deployment, pool, run, python)
    except InvalidInput:
        return None
