"""Runtime commands: ``run``, ``cancel``, ``pause``/``resume``, ``logs``,
``get runs`` and ``status``. They call the backend (``cli.backends``): the
store while a daemon runs (SQLite WAL lets both write; the daemon notices
within a second), or the daemon's API with ``--api-url``."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import click

from orchestra.cli.assignments import parse_assignments
from orchestra.cli.backends import Backend, RunQuery
from orchestra.cli.context import AppContext
from orchestra.cli.job_cmds import job_var_option, param_option
from orchestra.cli.output import emit_data, emit_table, output_option
from orchestra.diagnostics import Diagnostic
from orchestra.errors import NotFound
from orchestra.reconcile import presence
from orchestra.reconcile.operations import KIND_BY_NOUN
from orchestra.store import TERMINAL

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
    resource = app.backend.get_resource("Deployment", deployment)
    run = app.backend.create_run(deployment, parse_assignments(params, "--param", resource["spec"].get("parameterSchema")),
                                 parse_assignments(job_vars, "--job-var"))
    click.echo(json.dumps({"id": run["id"]}) if fmt == "json" else run["id"])
    for note in [*_pauses_holding(app.backend, resource), *_nobody_serving(app.backend, resource["spec"]["pool"])]:
        click.echo(f"Note: {note}", err=True)
    if watch:
        final = _watch(app.backend, run["id"])
        if final["state"] != "Completed":
            raise click.exceptions.Exit(1)


def _pauses_holding(backend: Backend, deployment: dict[str, Any]) -> list[str]:
    """What holds a new run of ``deployment`` back until someone resumes it: said at once,
    where a run left waiting (and a ``--watch`` showing nothing happen) would not say why."""
    spec = deployment["spec"]
    held = [("deployment", deployment)]
    for kind, noun, name in (("WorkPool", "pool", spec["pool"]), ("WorkQueue", "queue", spec.get("queue") or "default")):
        try:
            held.append((noun, backend.get_resource(kind, name)))
        except NotFound:  # the implicit default queue, which cannot be paused
            continue
    return [f"{resource['kind']}/{resource['name']} is paused: the run waits until "
            f"`orchestra resume {noun} {resource['name']}`" for noun, resource in held if resource.get("paused")]


def _nobody_serving(backend: Backend, pool: str) -> list[str]:
    """Said at once when no running daemon or online worker runs the pool's jobs: the
    run would wait, and a ``--watch`` show nothing happen, until one starts."""
    if presence.serving(pool, backend.daemons(), backend.workers()):
        return []
    return [f"no running daemon or online worker serves pool {pool!r} (see `orchestra status`): "
            "the run waits until one does"]


def _watch(backend: Backend, run_id: str) -> dict[str, Any]:
    """Print each state change to stderr until the run ends (no time limit: Ctrl-C stops watching)."""
    seen = 0
    while True:
        run = backend.get_run(run_id)
        for event in run["events"][seen:]:
            click.echo(f"{event['time']}  {event['to']:<10} {event['reason']}", err=True)
        seen = len(run["events"])
        if run["state"] in TERMINAL:
            return run
        time.sleep(WATCH_POLL)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.pass_obj
def cancel(app: AppContext, run_id: str) -> None:
    """Cancel RUN: a scheduled run at once, a running one by SIGTERM, grace, SIGKILL."""
    run = app.backend.cancel_run(run_id)
    click.echo(f"{run['id']}: {run['state']}")


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.command(verb, help=f"{verb.capitalize()} a deployment, pool, queue or one schedule "
                              "(NAME: DEPLOYMENT/SCHEDULE, its name or index); runtime state, not spec.")
    @click.argument("noun", type=click.Choice(sorted(KIND_BY_NOUN)))
    @click.argument("name")
    @click.pass_obj
    def command(app: AppContext, noun: str, name: str) -> None:
        resource = app.backend.set_paused(noun, name, paused)
        click.echo(f"{resource['kind']}/{resource['name']}: {'paused' if resource['paused'] else 'active'}")

    return command


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the run ends.")
@click.pass_obj
def logs(app: AppContext, run_id: str, follow: bool) -> None:
    """Print the output of RUN (stdout and stderr, in order)."""
    out = sys.stdout.buffer
    if follow:
        for chunk in app.backend.follow_log(run_id):
            out.write(chunk)
            out.flush()
        return
    data = app.backend.read_log(run_id)
    out.write(data)
    out.flush()
    if not data:  # say why, rather than leave an empty answer to be guessed at
        run = app.backend.get_run(run_id)
        why = "no output yet" if run["state"] not in TERMINAL else "no output"
        click.echo(f"Note: {why}: run {run['id'][:12]} is {run['state']} ({run['stateReason']})", err=True)


def show_runs(app: AppContext, run_id: str | None, where: RunQuery, fmt: str) -> None:
    """``get runs``: newest first, or one run with its events."""
    if run_id:
        emit_data(app.backend.get_run(run_id), "yaml" if fmt == "table" else fmt)
        return
    found = app.backend.list_runs(where)
    if fmt != "table":
        emit_data(found, fmt)
        return
    emit_table(["ID", "DEPLOYMENT", "STATE", "SCHEDULED", "ATTEMPT", "REASON"],
               [[r["id"][:12], r["deployment"], r["state"], _seconds(r["scheduledTime"]),
                 f"{r['attempt']}/{r['maxAttempts']}", r["stateReason"]] for r in found])


def _seconds(timestamp: str) -> str:
    return datetime.fromisoformat(timestamp).isoformat(timespec="seconds")


@click.command()
@output_option("text", "json")
@click.pass_obj
def status(app: AppContext, fmt: str) -> None:
    """The daemons and remote workers serving this store, and the daemons' view of the
    spec tree: valid, or the errors keeping the last good state (exit 1)."""
    spec_status = app.backend.spec_status()
    daemons, workers = app.backend.daemons(), app.backend.workers()
    if fmt == "json":
        emit_data({"specs": spec_status, "daemons": daemons, "workers": workers}, "json")
        return
    now = datetime.now().astimezone()
    for daemon in daemons:
        click.echo(daemon_line(daemon, now))
    if not daemons:
        click.echo("No daemon has served this store in the last day.")
    for worker in workers:
        click.echo(worker_line(worker, now))
    if spec_status is None:
        click.echo("No daemon has checked specs in this store yet.")
    elif spec_status["ok"]:
        click.echo(f"Specs valid ({spec_status['resources']} resources), checked {spec_status['checkedAt']}.")
    else:
        click.echo(f"Specs INVALID since {spec_status['checkedAt']}; the last good state keeps running:")
        for error in spec_status["errors"]:
            click.echo(f"  {Diagnostic(**error)}")
        raise click.exceptions.Exit(1)


def worker_line(worker: dict[str, Any], now: datetime) -> str:
    """One remote worker as ``orchestra status`` prints it."""
    seen = max(0.0, (now - datetime.fromisoformat(worker["seenAt"])).total_seconds())
    pools = ", ".join(worker["pools"]) or "none yet"
    if worker["state"] == "offline":
        return f"Worker {worker['worker']} OFFLINE: no request for {seen:.0f}s (since {_seconds(worker['seenAt'])}); pools: {pools}."
    return f"Worker {worker['worker']} online: claims from pools: {pools}; seen {seen:.0f}s ago." + _waits(worker)


def daemon_line(daemon: dict[str, Any], now: datetime) -> str:
    """One daemon as ``orchestra status`` prints it."""
    name = f"Daemon {daemon['host']}:{daemon['pid']}"
    if daemon["state"] == "stopped":
        return f"{name} stopped at {_seconds(daemon['stoppedAt'])}."
    if daemon["state"] == "gone":
        return (f"{name} gone: it ended without stopping (killed?) after {_seconds(daemon['seenAt'])}; "
                f"a later daemon on its host found it so at {_seconds(daemon['goneAt'])}.")
    seen = (now - datetime.fromisoformat(daemon["seenAt"])).total_seconds()
    if daemon["state"] == "unresponsive":
        return (f"{name} UNRESPONSIVE: not seen for {seen:.0f}s (since {_seconds(daemon['seenAt'])}) and it did not stop: "
                "killed, frozen, or its host gone.")
    schedules = {"materializes": "materializing the schedules; ",
                 "stands by": "standing by for the schedules (another daemon materializes them); "}
    return (f"{name} running: watching {', '.join(daemon['paths'])}, running the jobs of pools: {daemon['workers']}; "
            f"{schedules.get(daemon.get('schedules') or '', '')}"
            f"started {_seconds(daemon['startedAt'])}, seen {max(0.0, seen):.0f}s ago." + _waits(daemon))


def _waits(serving: dict[str, Any]) -> str:
    """A line per pool whose runner a running daemon or an online worker cannot reach."""
    return "".join(f"\n  Pool {outage['pool']}: its runs WAIT since {_seconds(outage['since'])}: {outage['error']}"
                   for outage in serving.get("unreachable") or [])


def register(group: click.Group) -> None:
    for command in (run_command, cancel, _pause_command(True), _pause_command(False), logs, status):
        group.add_command(command)
