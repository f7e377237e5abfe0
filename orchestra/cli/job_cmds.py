"""``render``, ``schedule`` and ``pools default-template``: look before you run."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from orchestra.cli.assignments import parse_assignments
from orchestra.cli.context import AppContext
from orchestra.cli.output import console, emit_data, emit_table, is_terminal
from orchestra.diagnostics import SpecError
from orchestra.jobs.defaults import POOL_TYPES, default_template
from orchestra.scheduling import Schedule, iter_slots, parse_schedule
from orchestra.specs.validate import load_resources, schedule_errors

param_option = click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                            help="A parameter for this run (repeatable); VALUE is read as YAML.")
job_var_option = click.option("--job-var", "job_vars", multiple=True, metavar="KEY=VALUE",
                              help="A job variable override (repeatable); dots nest: env.LOG_LEVEL=debug.")


@click.command()
@click.argument("deployment")
@param_option
@job_var_option
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.pass_obj
def render(app: AppContext, deployment: str, params: tuple[str, ...], job_vars: tuple[str, ...], fmt: str) -> None:
    """Print the job a run of DEPLOYMENT would get (and, on a terminal, the variables patch)."""
    schema = app.backend.get_resource("Deployment", deployment)["spec"].get("parameterSchema")
    rendered = app.backend.render(deployment, parse_assignments(params, "--param", schema),
                                  parse_assignments(job_vars, "--job-var"))
    emit_data(rendered["job"], fmt)
    if is_terminal() and fmt == "yaml":
        out = console()
        out.print(f"\n[dim]# job variables against the defaults of pool {rendered['pool']!r} (RFC 6902):[/]")
        for op in rendered["variablesPatch"] or [{"note": "no overrides"}]:
            out.print(f"[dim]# {json.dumps(op)}[/]", markup=True)


@click.command()
@click.argument("target")
@click.option("--count", "-n", default=5, show_default=True, type=click.IntRange(1, 10_000),
              help="How many run times to show.")
@click.option("--after", metavar="TIME", help="Start after this ISO 8601 time (default: now; no zone = UTC).")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def schedule(app: AppContext, target: str, count: int, after: str | None, fmt: str) -> None:
    """Next run times of a deployment (a stored NAME, or a spec file/dir PATH)."""
    spec = _deployment_spec(app, target)
    start = _parse_time(after) if after else app.now()
    schedules = [parse_schedule(raw) for raw in spec.get("schedules") or [] if raw.get("active", True)]
    slots = list(itertools.islice(merged_slots(schedules, start), count))
    if fmt == "json":
        click.echo(json.dumps([t.isoformat() for t, _ in slots], indent=2))
    elif not slots:
        click.echo("No active schedules.", err=True)
    else:
        emit_table(["TIME", "UTC", "SCHEDULE"], [[t.isoformat(), t.astimezone(timezone.utc).isoformat(), s.identity]
                                                 for t, s in slots])


def merged_slots(schedules: list[Schedule], after: datetime) -> Iterator[tuple[datetime, Schedule]]:
    """Slots of several schedules in time order, each in its own zone."""
    streams = [_keyed(index, s, after) for index, s in enumerate(schedules)]
    for _, _, local, sched in heapq.merge(*streams):
        yield local, sched


def _keyed(index: int, schedule: Schedule, after: datetime) -> Iterator[tuple[datetime, int, datetime, Schedule]]:
    for slot in iter_slots(schedule, after):
        yield slot.astimezone(timezone.utc), index, slot, schedule


def _deployment_spec(app: AppContext, target: str) -> dict[str, Any]:
    path = Path(target)
    if not path.exists():
        return app.backend.get_resource("Deployment", target)["spec"]
    specs = load_resources([path])
    deployments = specs.of_kind("Deployment")
    specs.diagnostics += [d.diagnostic(e) for d in deployments.values() for e in schedule_errors(d.spec)]
    if not specs.ok:
        raise SpecError(specs.diagnostics)
    if len(deployments) != 1:
        names = ", ".join(sorted(deployments)) or "none"
        raise click.BadParameter(f"{target} defines {len(deployments)} deployments ({names}); "
                                 "give a file with one, or a stored deployment's name", param_hint="TARGET")
    return next(iter(deployments.values())).spec


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint="--after") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@click.group()
def pools() -> None:
    """Work pool helpers."""


@pools.command("default-template")
@click.argument("pool_type", metavar="TYPE", type=click.Choice(POOL_TYPES))
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def default_template_command(pool_type: str, fmt: str) -> None:
    """Print the base job template a pool of TYPE gets when it declares none."""
    emit_data(default_template(pool_type), fmt)


def register(group: click.Group) -> None:
    for command in (render, schedule, pools):
        group.add_command(command)
