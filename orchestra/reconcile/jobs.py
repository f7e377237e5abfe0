"""Prepare a run's job from stored resources: parameters checked, job rendered.

Shared by ``orchestra render``, manual runs and the dispatcher, so a job is
rendered the same way whoever asks. Reads the deployment and its pool from
the store; the rendering itself is the pure ``jobs.template.render_job``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestra.errors import FieldError, InvalidInput
from orchestra.jobs.template import RenderedJob, render_job
from orchestra.specs.model import API_VERSION
from orchestra.specs.parameters import validate_parameters
from orchestra.specs.validate import pool_template
from orchestra.store import Store, StoredResource


@dataclass(frozen=True)
class PreparedJob:
    deployment: StoredResource
    pool: StoredResource
    parameters: dict[str, Any]
    rendered: RenderedJob


def stored_document(resource: StoredResource) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": resource.kind, "metadata": resource.metadata, "spec": resource.spec}


def run_parameters(deployment: StoredResource, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid by the run's own parameters, checked against the schema."""
    parameters = {**(deployment.spec.get("parameters") or {}), **overrides}
    schema = deployment.spec.get("parameterSchema")
    if schema is not None:
        errors = validate_parameters(schema, parameters)
        if errors:
            raise InvalidInput(errors, "parameter")
    return parameters


def prepare_job(store: Store, deployment_name: str, *, parameters: dict[str, Any] | None = None,
                job_variables: dict[str, Any] | None = None, run_id: str = "<run-id>",
                scheduled_time: str | None = None, python: str = "python") -> PreparedJob:
    deployment = store.get_resource("Deployment", deployment_name)
    pool = store.get_resource("WorkPool", deployment.spec["pool"])
    final = run_parameters(deployment, parameters or {})
    try:
        rendered = render_job(pool_template(pool.spec), stored_document(deployment), parameters=final,
                              job_variables=job_variables, run_id=run_id, scheduled_time=scheduled_time,
                              python=python)
    except FieldError as error:
        raise InvalidInput([error], "job") from None
    return PreparedJob(deployment, pool, final, rendered)
