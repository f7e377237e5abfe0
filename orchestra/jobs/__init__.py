"""Job rendering: from a pool's base job template and a deployment to the job a runner starts.

The public surface, used by spec validation, workers and the CLI:

- ``default_template(pool_type)`` / ``POOL_TYPES`` (``defaults``);
- ``check_template``, ``render_job``, ``render_errors``, ``pool_defaults``,
  ``RenderedJob`` (``template``);
- ``deep_merge``, ``variables_patch`` (``merge``);
- ``parameter_schema_from_entrypoint`` (``signature``);
- secret marks, ``secretRef`` references and masking (``secrets``): a
  ``RenderedJob``'s ``job`` is masked, ``runnable()`` has the real values.

Everything here is pure (values in, values out) except ``signature``, which
reads the entrypoint's source file; nothing here imports user code.
"""

from orchestra.jobs.defaults import POOL_TYPES, default_template
from orchestra.jobs.merge import deep_merge, variables_patch
from orchestra.jobs.signature import parameter_schema_from_entrypoint
from orchestra.jobs.template import RenderedJob, check_template, pool_defaults, render_errors, render_job

__all__ = [
    "POOL_TYPES",
    "RenderedJob",
    "check_template",
    "deep_merge",
    "default_template",
    "parameter_schema_from_entrypoint",
    "pool_defaults",
    "render_errors",
    "render_job",
    "variables_patch",
]
