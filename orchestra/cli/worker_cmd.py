"""``orchestra worker``: run a pool's jobs on this machine, taking the work through a daemon's API.

Wires a ``remote.RemoteWorker`` (the daemon's worker over HTTP) with this
machine's runners and the daemon's URL and token, then serves until SIGTERM
or SIGINT, which stop it cleanly: no new claims, running jobs get
``--shutdown-grace``, the rest are cancelled and reported. See docs/workers.md.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestra.cli.context import AppContext
from orchestra.cli.logging_config import configure_logging
from orchestra.cli.serving import duration_seconds, stop_on_signals
from orchestra.cli.tokens import TOKEN_ENV, read_token
from orchestra.runners.available import available_runners

if TYPE_CHECKING:
    from orchestra.remote.health import HealthServer

log = logging.getLogger("orchestra.worker")
URL_ENV = "ORCHESTRA_API_URL"


@click.command()
@click.option("--pool", required=True, metavar="NAME", help="The work pool whose runs this worker executes.")
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only runs of this queue of the pool; repeat for several (default: every queue).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Run at most N jobs at a time on this worker (default: as many as the pool admits).")
@click.option("--api-url", envvar=URL_ENV, metavar="URL",
              help=f"The daemon's API, e.g. http://orchestra.internal:4200. Env: {URL_ENV}.")
@click.option("--api-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"File holding the API's bearer token (default: the {TOKEN_ENV} environment variable).")
@click.option("--name", metavar="NAME",
              help="The worker's name in runs and logs (default: remote:<host>:<pid>:<random>).")
@click.option("--lease", default="30s", show_default=True, metavar="DURATION",
              help="How long the daemon waits after the last heartbeat before it recovers this worker's runs.")
@click.option("--poll", default="1s", show_default=True, metavar="DURATION",
              help="How often the daemon is asked for new runs when there is nothing to do.")
@click.option("--shutdown-grace", default="30s", show_default=True, metavar="DURATION",
              help="On SIGTERM/SIGINT, how long running jobs may finish before they are cancelled.")
@click.option("--base-dir", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="Directory relative working directories and entrypoints of jobs resolve against "
                   "(a checkout of the spec directory).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where job logs are kept on this machine (default: .orchestra/worker-logs).")
@click.option("--keep-logs", metavar="DURATION",
              help="Delete this machine's copies of job logs last written longer ago than this (e.g. 7d), "
                   "once sent to the daemon, which keeps its own (default: keep them all).")
@click.option("--health-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve GET /health on this port for a supervisor (a Kubernetes liveness probe): 503 when "
                   "the worker's loop has not come round for 60s (0: any free port; default: no server).")
@click.option("--health-host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="Address of the health check (it says only whether the loop turns).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING"]), default="INFO", show_default=True)
@click.pass_obj
def worker(app: AppContext, pool: str, queues: tuple[str, ...], limit: int | None, api_url: str | None,
           api_token_file: Path | None, name: str | None, lease: str, poll: str, shutdown_grace: str,
           base_dir: Path, log_dir: Path | None, keep_logs: str | None, health_port: int | None, health_host: str,
           log_format: str, log_level: str) -> None:
    """Claim runs of POOL through the daemon's API and run their jobs on this machine."""
    configure_logging(log_format, log_level)
    from orchestra.client import ApiClient
    from orchestra.remote.worker import RemoteWorker  # HTTP and runners only for this command

    url, token = _endpoint(app, api_url, api_token_file)
    worker_id = name or default_name()
    lease_seconds = duration_seconds(lease, "--lease", minimum=1.0)
    keep = timedelta(seconds=duration_seconds(keep_logs, "--keep-logs")) if keep_logs is not None else None
    # A request may not hang longer than a heartbeat interval: the next heartbeat waits behind it.
    with ApiClient(url, token, timeout=max(2.0, min(30.0, lease_seconds / 3))) as client:
        instance = RemoteWorker(
            client, worker_id=worker_id, pool=pool, runners=available_runners(base_dir.resolve()),
            log_dir=log_dir or app.settings.state_dir / "worker-logs", queues=list(queues) or None, limit=limit,
            lease_seconds=lease_seconds, poll_interval=duration_seconds(poll, "--poll"),
            shutdown_grace=duration_seconds(shutdown_grace, "--shutdown-grace"), keep_logs=keep)
        stop_on_signals(instance, log, hangup=True)
        log.info("orchestra worker %s serving pool %s%s from %s", worker_id, pool,
                 f" (queues {', '.join(queues)})" if queues else "", url)
        health = _health_server(health_host, health_port, instance.loop_quiet_for) if health_port is not None else None
        try:
            instance.serve()
        finally:
            if health is not None:
                health.stop()


def _health_server(host: str, port: int, loop_quiet_for: Callable[[], float | None]) -> HealthServer:
    from orchestra.remote.health import HealthServer

    try:
        server = HealthServer(host, port, loop_quiet_for)
    except OSError as exc:
        raise click.ClickException(f"cannot serve the health check on {host}:{port}: {exc.strerror or exc}") from None
    server.start()
    log.info("health check listening on %s", server.url)
    return server


def default_name() -> str:
    """``remote:<host>:<pid>:<random>``: unique, and never taken for a daemon's local worker."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
    return f"remote:{host}:{os.getpid()}:{secrets.token_hex(3)}"


def _endpoint(app: AppContext, api_url: str | None, token_file: Path | None) -> tuple[str, str | None]:
    """The daemon's URL and token: this command's options, else the ones given to ``orchestra``."""
    remote = getattr(app, "remote", None)
    url = api_url or (remote.url if remote is not None else None)
    if not url:
        raise click.UsageError(f"give the daemon's API with --api-url URL (or {URL_ENV})")
    if token_file is None and remote is not None and remote.token:
        return url, str(remote.token)
    return url, read_token(token_file)


def register(group: click.Group) -> None:
    group.add_command(worker)
