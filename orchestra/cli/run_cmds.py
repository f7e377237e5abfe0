"""Runtime commands: ``run``, ``cancel``, ``pause``/``resume``, ``logs``,
``get runs`` and ``status``. They work against the store while a daemon
runs (SQLite WAL lets both write); the daemon notices within a second."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import click

from orchestra.api.shapes import run_detail_json, run_json
from orchestra.cli.assignments import parse_assignments
from orchestra.cli.context import AppContext
from orchestra.cli.job_cmds import job_var_option, param_option
from orchestra.cli.output import emit_data, emit_table, output_option
from orchestra.diagnostics import Diagnostic
from orchestra.reconcile.daemon import SPEC_STATUS
from orchestra.reconcile.operations import KIND_BY_NOUN, cancel_run, create_manual_run, set_paused
from orchestra.runners.logs import follow_log, read_log
from orchestra.store import TERMINAL, Run

WATCH_POLL = 0.2


@click.command("run")
@click.argument("deployment")
@param_option
@job_var_option
@click.option("--watch", is_flag=True, help="Follow the run's states; exit 0 only if it completes.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def run_command(app: AppContext, deployment: str, params: tuple[str, ...], job_vars: tuple[str, ...],
                watch: bool, fmt: str) -> None:
    """Start a run of DEPLOYMENT now, with these parameters."""
    schema = app.store.get_resource("Deployment", deployment).spec.get("parameterSchema")
    run = create_manual_run(app.store, deployment, parameters=parse_assignments(params, "--param", schema),
                            job_variables=parse_assignments(job_vars, "--job-var"), now=app.now())
    click.echo(json.dumps({"id": run.id}) if fmt == "json" else run.id)
    if watch:
        final = _watch(app, run.id)
        if final.state != "Completed":
            raise click.exceptions.Exit(1)


def _watch(app: AppContext, run_id: str) -> Run:
    """Print each state change to stderr until the run ends (no time limit: Ctrl-C stops watching)."""
    seen = 0
    while True:
        events = app.store.events(run_id)
        for event in events[seen:]:
            click.echo(f"{event.time.isoformat()}  {event.to_state:<10} {event.reason}", err=True)
        seen = len(events)
        run = app.store.get_run(run_id)
        if run.state in TERMINAL:
            return run
        time.sleep(WATCH_POLL)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.pass_obj
def cancel(app: AppContext, run_id: str) -> None:
    """Cancel RUN: a scheduled run at once, a running one by SIGTERM, grace, SIGKILL."""
    run = cancel_run(app.store, run_id)
    click.echo(f"{run.id}: {run.state}")


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.command(verb, help=f"{verb.capitalize()} a deployment, pool or queue (runtime state, not spec).")
    @click.argument("noun", type=click.Choice(sorted(KIND_BY_NOUN)))
    @click.argument("name")
    @click.pass_obj
    def command(app: AppContext, noun: str, name: str) -> None:
        resource = set_paused(app.store, noun, name, paused)
        click.echo(f"{resource.kind}/{resource.name}: {'paused' if resource.paused else 'active'}")

    return command


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the run ends.")
@click.pass_obj
def logs(app: AppContext, run_id: str, follow: bool) -> None:
    """Print the output of RUN (stdout and stderr, in order)."""
    run = app.store.get_run(run_id)
    path = app.settings.state_dir / "logs" / f"{run.id}.log"
    out = sys.stdout.buffer
    if not follow:
        data, _ = read_log(path)
        out.write(data)
        out.flush()
        return
    for chunk in follow_log(path, 0, stop=lambda: app.store.get_run(run.id).state in TERMINAL):
        out.write(chunk)
        out.flush()


@dataclass(frozen=True)
class RunFilter:
    deployment: str | None
    states: set[str]
    pool: str | None
    limit: int


def show_runs(app: AppContext, run_id: str | None, where: RunFilter, fmt: str) -> None:
    """``get runs``: newest first, or one run with its events."""
    if run_id:
        run = app.store.get_run(run_id)
        emit_data(run_detail_json(run, app.store.events(run.id)), "yaml" if fmt == "table" else fmt)
        return
    found = app.store.list_runs(deployment=where.deployment, state=where.states or None, pool=where.pool,
                                limit=where.limit)
    if fmt != "table":
        emit_data([run_json(r) for r in found], fmt)
        return
    emit_table(["ID", "DEPLOYMENT", "STATE", "SCHEDULED", "ATTEMPT", "REASON"],
               [[r.id[:12], r.deployment, r.state, r.scheduled_time.isoformat(timespec="seconds"),
                 f"{r.attempt}/{r.max_attempts}", r.state_reason] for r in found])


@click.command()
@output_option("text", "json")
@click.pass_obj
def status(app: AppContext, fmt: str) -> None:
    """The daemon's view of the spec tree: valid, or the errors keeping the last good state."""
    spec_status = app.store.get_status(SPEC_STATUS)
    if fmt == "json":
        emit_data({"specs": spec_status}, "json")
        return
    if spec_status is None:
        click.echo("No daemon has checked specs in this store yet.")
    elif spec_status["ok"]:
        click.echo(f"Specs valid ({spec_status['resources']} resources), checked {spec_status['checkedAt']}.")
    else:
        click.echo(f"Specs INVALID since {spec_status['checkedAt']}; the last good state keeps running:")
        for error in spec_status["errors"]:
            click.echo(f"  {Diagnostic(**error)}")
        raise click.exceptions.Exit(1)


def register(group: click.Group) -> None:
    for command in (run_command, cancel, _pause_command(True), _pause_command(False), logs, status):
        group.add_command(command)
