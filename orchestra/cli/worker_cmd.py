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
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import click

from orchestra.cli.context import AppContext
from orchestra.cli.logging_config import configure_logging
from orchestra.durations import parse_duration

log = logging.getLogger("orchestra.worker")
TOKEN_ENV = "ORCHESTRA_API_TOKEN"
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
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING"]), default="INFO", show_default=True)
@click.pass_obj
def worker(app: AppContext, pool: str, queues: tuple[str, ...], limit: int | None, api_url: str | None,
           api_token_file: Path | None, name: str | None, lease: str, poll: str, shutdown_grace: str,
           base_dir: Path, log_dir: Path | None, log_format: str, log_level: str) -> None:
    """Claim runs of POOL through the daemon's API and run their jobs on this machine."""
    configure_logging(log_format, log_level)
    from orchestra.client import ApiClient
    from orchestra.remote.worker import RemoteWorker  # HTTP and runners only for this command

    url, token = _endpoint(app, api_url, api_token_file)
    worker_id = name or default_name()
    lease_seconds = _duration(lease, "--lease", minimum=1.0)
    # A request may not hang longer than a heartbeat interval: the next heartbeat waits behind it.
    with ApiClient(url, token, timeout=max(2.0, min(30.0, lease_seconds / 3))) as client:
        instance = RemoteWorker(
            client, worker_id=worker_id, pool=pool, runners=_runners(base_dir.resolve()),
            log_dir=log_dir or app.settings.state_dir / "worker-logs", queues=list(queues) or None, limit=limit,
            lease_seconds=lease_seconds, poll_interval=_duration(poll, "--poll"),
            shutdown_grace=_duration(shutdown_grace, "--shutdown-grace"))
        _install_signal_handlers(instance)
        log.info("orchestra worker %s serving pool %s%s from %s", worker_id, pool,
                 f" (queues {', '.join(queues)})" if queues else "", url)
        instance.serve()


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
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--api-token-file")
        return url, token
    if remote is not None and remote.token:
        return url, str(remote.token)
    value = os.environ.get(TOKEN_ENV)
    if value is not None and not value.strip():
        raise click.UsageError(f"{TOKEN_ENV} is set but empty; unset it or give the daemon's token")
    return url, value.strip() if value else None


def _runners(base_dir: Path) -> dict[str, Any]:
    """A runner per pool type this machine can serve; docker only with the Docker SDK installed."""
    from orchestra.runners.process import ProcessRunner

    runners: dict[str, Any] = {"process": ProcessRunner(base_dir)}
    try:
        from orchestra.runners.docker import DockerRunner
    except ImportError:
        log.info("the Docker SDK is not installed (pip install 'orchestra[docker]'): docker pools are not served")
    else:
        runners["docker"] = DockerRunner(base_dir)
    return runners


def _duration(text: str, option: str, minimum: float = 0.0) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if seconds < minimum:
        raise click.BadParameter(f"must be at least {minimum:g}s", param_hint=option)
    return seconds


def _install_signal_handlers(instance: Any) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        instance.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def register(group: click.Group) -> None:
    group.add_command(worker)
