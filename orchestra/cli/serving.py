"""What the two long-running commands, ``orchestra daemon`` and ``orchestra worker``, share:
duration options and a clean stop on SIGTERM/SIGINT (and SIGHUP: the daemon reads its specs again,
the worker stops cleanly)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Protocol

import click

from orchestra.durations import parse_duration


class Stoppable(Protocol):
    def stop(self) -> None: ...


def duration_seconds(text: str, option: str, minimum: float = 0.0) -> float:
    """A duration option (``30s``, ``5m``, ``PT1M``) in seconds, refused in the option's name."""
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if seconds < minimum:
        raise click.BadParameter(f"must be at least {minimum:g}s", param_hint=option)
    return seconds


def stop_on_signals(instance: Stoppable, log: logging.Logger, *, hangup: bool = False) -> None:
    """SIGTERM and SIGINT ask ``instance`` to stop; its ``stop`` must be safe in a signal handler.

    With ``hangup``, SIGHUP too: a command with nothing to read again (the
    worker) gets it when its terminal goes away, and SIGHUP's default action
    would end it at once, without cancelling its jobs or sending their logs.
    """
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        instance.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if hangup else ())):
        signal.signal(signum, handle)


def reread_on_hangup(reread: Callable[[], None], log: logging.Logger) -> None:
    """SIGHUP reads the specs again at once, as ``systemctl reload`` and ``kill -HUP``
    ask of a daemon (its default action would end the daemon without a clean stop).
    ``reread`` must be safe in a signal handler."""
    def handle(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP: reading the specs again")
        reread()

    signal.signal(signal.SIGHUP, handle)
