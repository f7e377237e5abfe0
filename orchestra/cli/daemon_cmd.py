"""``orchestra daemon``: wire the real store, runners, worker, watcher and HTTP API, then serve.

The API (``orchestra.api``) runs in a thread of this process over the same
store; it is imported only here and only when enabled, so other commands
never load the web stack. Its token comes from ``--api-token-file`` or
``ORCHESTRA_API_TOKEN``; without one it listens on loopback only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestra.cli.context import AppContext
from orchestra.cli.logging_config import configure_logging
from orchestra.cli.serving import duration_seconds, reread_on_hangup, stop_on_signals
from orchestra.cli.tokens import TOKEN_ENV, read_token
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.runners.available import available_runners
from orchestra.specs.validate import spec_root

if TYPE_CHECKING:
    from orchestra.api.server import ApiServer
    from orchestra.store import Store

log = logging.getLogger("orchestra.daemon")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--workers", default="all", show_default=True, metavar="all|none|POOL,...",
              help="Pools whose runs this daemon executes itself.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Delete spec-managed resources whose files are gone.")
@click.option("--shutdown-grace", default="30s", show_default=True, metavar="DURATION",
              help="On SIGTERM/SIGINT, how long running jobs may finish before they are cancelled.")
@click.option("--keep-runs", metavar="DURATION",
              help="Delete runs over for longer than this (e.g. 30d), with their events and logs; "
                   "the latest run of each schedule stays. Default: keep every run.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the HTTP API listens on (beyond loopback only with a token).")
@click.option("--port", default=4200, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the HTTP API (0: any free port).")
@click.option("--api/--no-api", "api", default=True, show_default=True, help="Serve the HTTP API.")
@click.option("--api-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"File holding the API's bearer token (default: the {TOKEN_ENV} environment variable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING"]), default="INFO", show_default=True)
@click.pass_obj
def daemon(app: AppContext, paths: tuple[Path, ...], workers: str, prune: bool, shutdown_grace: str,
           keep_runs: str | None, host: str, port: int, api: bool, api_token_file: Path | None, log_format: str,
           log_level: str) -> None:
    """Watch PATHS, apply them, turn schedules into runs and run them; serve the HTTP API."""
    if app.remote is not None:
        raise click.UsageError(f"orchestra daemon runs next to its store and serves the API itself: it does not "
                               f"talk to another daemon (--api-url / ORCHESTRA_API_URL is {app.remote.url}); "
                               "unset it and give the store with --db")
    configure_logging(log_format, log_level)
    grace = duration_seconds(shutdown_grace, "--shutdown-grace")
    keep = timedelta(seconds=duration_seconds(keep_runs, "--keep-runs")) if keep_runs is not None else None
    root = spec_root(list(paths))
    log_dir = app.settings.state_dir / "logs"  # the jobs' logs, and the remote workers' copies
    pools = None if workers in ("all", "none") else [p.strip() for p in workers.split(",") if p.strip()]
    settings = DaemonSettings(paths=list(paths), prune=prune, shutdown_grace=grace, keep_runs=keep, log_dir=log_dir,
                              workers=",".join(pools) if pools is not None else workers, freeze_after_start=True)
    from orchestra.workers.local import LocalWorker, worker_identity  # only the daemon needs workers

    worker = None
    if workers != "none":
        worker = LocalWorker(app.store, runners=available_runners(root.resolve()), pools=pools,
                             worker_id=worker_identity(), log_dir=log_dir)
    instance = Daemon(app.store, worker, settings)
    if worker is not None:
        worker.on_change = instance.wake
    server = (_api_server(app.store, app, list(paths), prune, host, port, api_token_file, instance.loop_quiet_for)
              if api else None)
    stop_on_signals(instance, log)
    reread_on_hangup(instance.spec_changed, log)
    log.info("orchestra daemon watching %s (store %s, workers: %s)", ", ".join(map(str, paths)),
             app.settings.db_url or app.settings.state_dir / "orchestra.db", workers)
    if server is not None:
        try:
            server.start()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        instance.serve()
    finally:
        if server is not None:
            server.stop()


def _api_server(store: Store, app: AppContext, paths: list[Path], prune: bool, host: str, port: int,
                token_file: Path | None, loop_quiet_for: Callable[[], float | None]) -> ApiServer:
    """Build the API and bind its socket, refusing an open API beyond loopback."""
    from orchestra.api.app import create_app
    from orchestra.api.auth import InsecureListenError, check_listen_address
    from orchestra.api.server import ApiServer
    from orchestra.api.settings import ApiSettings
    from orchestra.ui import mount as mount_ui

    token = read_token(token_file)
    try:
        check_listen_address(host, token)
    except InsecureListenError as exc:
        raise click.ClickException(str(exc)) from None
    settings = ApiSettings(token=token, state_dir=app.settings.state_dir, spec_paths=tuple(paths), prune=prune,
                           daemon_loop=loop_quiet_for)
    try:
        return ApiServer(mount_ui(create_app(store, settings=settings), store, settings), host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}") from None


def register(group: click.Group) -> None:
    group.add_command(daemon)
