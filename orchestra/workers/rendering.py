"""A claimed run's job, rendered from the deployment and pool the worker already holds.

``Launcher`` calls ``render_run`` for every run it starts, with resources
from ``ResourceCache``, so rendering costs no store read. It follows
``reconcile.jobs.prepare_job`` (what ``orchestra render`` and manual runs
use) step for step: parameter defaults overlaid by the run's own and checked
against the schema, then the pure ``jobs.template.render_job``. It cannot
call it: workers and reconcile are independent layers (``.importlinter``).
``tests/test_worker_local.py`` checks that both render the same job.
"""

from __future__ import annotations

from typing import Any

from orchestra.errors import FieldError, InvalidInput
from orchestra.jobs.template import RenderedJob, render_job
from orchestra.specs.model import API_VERSION
from orchestra.specs.parameters import validate_parameters
from orchestra.specs.validate import pool_template
from orchestra.store import Run, StoredResource


def render_run(deployment: StoredResource, pool: StoredResource, run: Run, python: str) -> RenderedJob:
    """The job of ``run``; ``InvalidInput`` when its parameters or job variables do not fit."""
    parameters = {**(deployment.spec.get("parameters") or {}), **run.parameters}
    schema = deployment.spec.get("parameterSchema")
    if schema is not None:
        errors = validate_parameters(schema, parameters)
        if errors:
            raise InvalidInput(errors, "parameter")
    # The slot, not the retry's due time: every attempt of a slot sees the same
    # ORCHESTRA_SCHEDULED_TIME, so a job keyed on it stays idempotent across retries.
    scheduled = (run.slot_time or run.scheduled_time).isoformat()
    try:
        return render_job(pool_template(pool.spec), _document(deployment), parameters=parameters,
                          job_variables=run.job_variables, run_id=run.id, scheduled_time=scheduled, python=python)
    except FieldError as error:
        raise InvalidInput([error], "job") from None


def _document(resource: StoredResource) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": resource.kind, "metadata": resource.metadata, "spec": resource.spec}
