"""Workers: claim runs, render their jobs, run them through a runner, report the outcome.

``LocalWorker`` (``local.py``) is the daemon's in-process worker; start
there. It depends on the store and on the runner protocol only
(``orchestra.runners.base``), so the process runner, a Docker runner and
test doubles plug in alike. The modules: ``launching`` (claimed runs ->
running jobs), ``rendering`` (a run's job from its deployment and pool),
``resource_cache`` (pools and deployments, re-read only when changed),
``supervision`` (what is known about a running job, and its threads),
``outcomes`` (pure decisions and their words), ``reporting`` (batched
transitions and log lines), ``recovery`` (runs of dead workers),
``identity`` (who a local worker is, and whether it lives).
"""

from orchestra.workers.identity import worker_identity
from orchestra.workers.local import LocalWorker

__all__ = ["LocalWorker", "worker_identity"]
