"""``orchestra daemon``: wire the real store, runners, worker and watcher, then serve."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import click

from orchestra.cli.context import AppContext
from orchestra.cli.logging_config import configure_logging
from orchestra.durations import parse_duration
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.specs.validate import spec_root

log = logging.getLogger("orchestra.daemon")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--workers", default="all", show_default=True, metavar="all|none|POOL,...",
              help="Pools whose runs this daemon executes itself.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Delete spec-managed resources whose files are gone.")
@click.option("--shutdown-grace", default="30s", show_default=True, metavar="DURATION",
              help="On SIGTERM/SIGINT, how long running jobs may finish before they are cancelled.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING"]), default="INFO", show_default=True)
@click.pass_obj
def daemon(app: AppContext, paths: tuple[Path, ...], workers: str, prune: bool, shutdown_grace: str,
           log_format: str, log_level: str) -> None:
    """Watch PATHS, apply them, turn schedules into runs and run them."""
    configure_logging(log_format, log_level)
    grace = _duration(shutdown_grace, "--shutdown-grace")
    root = spec_root(list(paths))
    settings = DaemonSettings(paths=list(paths), prune=prune, shutdown_grace=grace)
    from orchestra.runners.process import ProcessRunner  # only the daemon needs runners and workers
    from orchestra.workers.local import LocalWorker, worker_identity

    worker = None
    if workers != "none":
        pools = None if workers == "all" else [p.strip() for p in workers.split(",") if p.strip()]
        worker = LocalWorker(app.store, runners={"process": ProcessRunner(root.resolve())}, pools=pools,
                             worker_id=worker_identity(), log_dir=app.settings.state_dir / "logs")
    instance = Daemon(app.store, worker, settings)
    if worker is not None:
        worker.on_change = instance.wake
    _install_signal_handlers(instance)
    log.info("orchestra daemon watching %s (store %s, workers: %s)", ", ".join(map(str, paths)),
             app.settings.db_url or app.settings.state_dir / "orchestra.db", workers)
    instance.serve()


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _install_signal_handlers(instance: Daemon) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        instance.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def register(group: click.Group) -> None:
    group.add_command(daemon)
