"""``orchestra get``: list or show stored resources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from orchestra.cli.backends import RunQuery
from orchestra.cli.context import AppContext
from orchestra.cli.output import emit_data, emit_table, output_option
from orchestra.cli.run_cmds import show_runs
from orchestra.store import STATES

KIND_BY_NOUN = {"pools": "WorkPool", "pool": "WorkPool", "queues": "WorkQueue", "queue": "WorkQueue",
                "deployments": "Deployment", "deployment": "Deployment"}


def _schedules_cell(spec: dict[str, Any]) -> str:
    schedules = spec.get("schedules") or []
    return ", ".join(s.get("cron") or f"every {s.get('interval')}" for s in schedules) or "-"


Row = Callable[[dict[str, Any]], list[Any]]
ROWS: dict[str, tuple[list[str], Row]] = {
    "WorkPool": (["NAME", "TYPE", "LIMIT", "PAUSED", "SOURCE"],
                 lambda r: [r["name"], r["spec"]["type"], r["spec"].get("concurrencyLimit"), r["paused"],
                            r["source"]]),
    "WorkQueue": (["NAME", "POOL", "PRIORITY", "LIMIT", "PAUSED"],
                  lambda r: [r["name"], r["spec"]["pool"], r["spec"].get("priority", 100),
                             r["spec"].get("concurrencyLimit"), r["paused"]]),
    "Deployment": (["NAME", "POOL", "QUEUE", "SCHEDULES", "PAUSED", "SOURCE"],
                   lambda r: [r["name"], r["spec"]["pool"], r["spec"].get("queue") or "default",
                              _schedules_cell(r["spec"]), r["paused"], r["source"]]),
}


@click.command()
@click.argument("noun", type=click.Choice(sorted([*KIND_BY_NOUN, "runs", "run"])))
@click.argument("name", required=False)
@click.option("--deployment", "-d", help="runs: only of this deployment.")
@click.option("--state", "-s", "states", multiple=True, type=click.Choice(STATES), help="runs: only in this state.")
@click.option("--pool", help="runs: only of this pool.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="runs: how many.")
@output_option()
@click.pass_obj
def get(app: AppContext, noun: str, name: str | None, deployment: str | None, states: tuple[str, ...],
        pool: str | None, limit: int, fmt: str) -> None:
    """List pools, queues, deployments or runs, or show one by NAME."""
    if noun in ("runs", "run"):
        show_runs(app, name, RunQuery(deployment, frozenset(states), pool, limit), fmt)
        return
    _warn_about_spec_errors(app)
    kind = KIND_BY_NOUN[noun]
    resources = [app.backend.get_resource(kind, name)] if name else app.backend.list_resources(kind)
    if fmt != "table":
        emit_data(resources[0] if name else resources, fmt)
        return
    if not resources:
        click.echo(f"No {noun} found. Apply specs first: orchestra apply specs/", err=True)
        return
    columns, row = ROWS[kind]
    emit_table(columns, [row(r) for r in resources])


def _warn_about_spec_errors(app: AppContext) -> None:
    """The daemon keeps the last good state when specs break; say so wherever resources show."""
    spec_status = app.backend.spec_status()
    if spec_status and not spec_status["ok"]:
        click.echo(f"Warning: the watched specs have {len(spec_status['errors'])} error(s) since "
                   f"{spec_status['checkedAt']}; showing the last good state (see: orchestra status).", err=True)


def register(group: click.Group) -> None:
    group.add_command(get)


