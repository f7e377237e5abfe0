"""``validate``, ``plan`` and ``apply``: the declarative core's commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestra.cli.backends import PlanOutcome
from orchestra.cli.context import AppContext
from orchestra.cli.output import console
from orchestra.diagnostics import SpecError
from orchestra.specs.validate import load_specs

EXIT_CHANGES = 2

paths_argument = click.argument("paths", nargs=-1, required=True,
                                type=click.Path(exists=True, path_type=Path))
text_or_json = click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text",
                            show_default=True, help="Output format.")


@click.command()
@paths_argument
@text_or_json
def validate(paths: tuple[Path, ...], fmt: str) -> None:
    """Check spec files: YAML, schemas, references, schedules, parameters, jobs."""
    specs = load_specs(list(paths))
    if fmt == "json":
        click.echo(json.dumps({"valid": specs.ok, "files": len(specs.files), "resources": len(specs.resources),
                               "errors": [d.to_json() for d in specs.diagnostics]}, indent=2))
        if not specs.ok:
            raise click.exceptions.Exit(1)
        return
    if not specs.ok:
        raise SpecError(specs.diagnostics)
    click.echo(f"{len(specs.files)} file(s), {len(specs.resources)} resource(s): valid.")


@click.command()
@paths_argument
@click.option("--prune", is_flag=True, help="Also plan deleting spec-managed resources absent from PATHS.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 for no changes, 2 for changes, 1 for errors.")
@text_or_json
@click.pass_obj
def plan(app: AppContext, paths: tuple[Path, ...], prune: bool, detailed_exitcode: bool, fmt: str) -> None:
    """Show what apply would change, field by field."""
    outcome = app.backend.plan(list(paths), prune=prune)
    _show(outcome, fmt)
    if detailed_exitcode and outcome.has_changes:
        raise click.exceptions.Exit(EXIT_CHANGES)


@click.command()
@paths_argument
@click.option("--prune", is_flag=True, help="Delete spec-managed resources absent from PATHS.")
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@text_or_json
@click.pass_obj
def apply(app: AppContext, paths: tuple[Path, ...], prune: bool, dry_run: bool, fmt: str) -> None:
    """Make the store match the specs, in one transaction."""
    outcome = (app.backend.plan if dry_run else app.backend.apply)(list(paths), prune=prune)
    if fmt == "json":
        click.echo(json.dumps({**outcome.json, "applied": not dry_run}, indent=2, default=str))
        return
    _show(outcome, fmt)
    if outcome.has_changes and not dry_run:
        s = outcome.summary
        console().print(f"[bold green]Apply complete![/] {s['create']} created, {s['update']} updated, "
                        f"{s['delete']} deleted.")


def _show(outcome: PlanOutcome, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(outcome.json, indent=2, default=str))
    else:
        console().print(outcome.text)


def register(group: click.Group) -> None:
    for command in (validate, plan, apply):
        group.add_command(command)
