"""Prepare a run's job from the store: parameters checked, job rendered.

Used by ``orchestra render``, manual runs (CLI and API) and anything else
that starts from a deployment's name; the rendering itself is shared with
the worker (``workers.rendering.render_with``), so a job is rendered the
same way whoever asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestra.jobs.template import RenderedJob
from orchestra.store import Store, StoredResource
from orchestra.workers.rendering import render_with


@dataclass(frozen=True)
class PreparedJob:
    deployment: StoredResource
    pool: StoredResource
    parameters: dict[str, Any]
    rendered: RenderedJob


def prepare_job(store: Store, deployment_name: str, *, parameters: dict[str, Any] | None = None,
                job_variables: dict[str, Any] | None = None, run_id: str = "<run-id>",
                scheduled_time: str | None = None, python: str = "python") -> PreparedJob:
    deployment = store.get_resource("Deployment", deployment_name)
    pool = store.get_resource("WorkPool", deployment.spec["pool"])
    final, rendered = render_with(deployment, pool, parameters=parameters or {}, job_variables=job_variables,
                                  run_id=run_id, scheduled_time=scheduled_time, python=python)
    return PreparedJob(deployment, pool, final, rendered)
