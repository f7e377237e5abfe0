"""``orchestra get``: list or show stored resources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from orchestra.cli.context import AppContext
from orchestra.cli.output import emit_data, emit_table, output_option
from orchestra.store import StoredResource

KIND_BY_NOUN = {"pools": "WorkPool", "pool": "WorkPool", "queues": "WorkQueue", "queue": "WorkQueue",
                "deployments": "Deployment", "deployment": "Deployment"}


def effective_paused(resource: StoredResource) -> bool:
    """Runtime pause (CLI, API, UI) wins over the spec's ``paused`` while it is set."""
    if resource.paused_override is not None:
        return resource.paused_override
    return bool(resource.spec.get("paused", False))


def resource_json(resource: StoredResource) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": resource.kind, "name": resource.name}
    if resource.kind == "Deployment":
        data.update(pool=resource.spec["pool"], queue=resource.spec.get("queue") or "default")
    data.update(
        paused=effective_paused(resource),
        labels=resource.metadata.get("labels") or {},
        source=f"{resource.source_file}:{resource.source_line}" if resource.source_file else None,
        manager=resource.manager,
        generation=resource.generation,
        spec=resource.spec,
    )
    return data


def _schedules_cell(spec: dict[str, Any]) -> str:
    schedules = spec.get("schedules") or []
    return ", ".join(s.get("cron") or f"every {s.get('interval')}" for s in schedules) or "-"


ROWS: dict[str, tuple[list[str], Callable[[StoredResource], list[Any]]]] = {
    "WorkPool": (["NAME", "TYPE", "LIMIT", "PAUSED", "SOURCE"],
                 lambda r: [r.name, r.spec["type"], r.spec.get("concurrencyLimit"), effective_paused(r),
                            resource_json(r)["source"]]),
    "WorkQueue": (["NAME", "POOL", "PRIORITY", "LIMIT", "PAUSED"],
                  lambda r: [r.name, r.spec["pool"], r.spec.get("priority", 100), r.spec.get("concurrencyLimit"),
                             effective_paused(r)]),
    "Deployment": (["NAME", "POOL", "QUEUE", "SCHEDULES", "PAUSED", "SOURCE"],
                   lambda r: [r.name, r.spec["pool"], r.spec.get("queue") or "default", _schedules_cell(r.spec),
                              effective_paused(r), resource_json(r)["source"]]),
}


@click.command()
@click.argument("noun", type=click.Choice(sorted(KIND_BY_NOUN)))
@click.argument("name", required=False)
@output_option()
@click.pass_obj
def get(app: AppContext, noun: str, name: str | None, fmt: str) -> None:
    """List pools, queues or deployments, or show one by NAME."""
    kind = KIND_BY_NOUN[noun]
    resources = [app.store.get_resource(kind, name)] if name else app.store.list_resources(kind)
    if fmt != "table":
        data = [resource_json(r) for r in resources]
        emit_data(data[0] if name else data, fmt)
        return
    if not resources:
        click.echo(f"No {noun} found. Apply specs first: orchestra apply specs/", err=True)
        return
    columns, row = ROWS[kind]
    emit_table(columns, [row(r) for r in resources])


def register(group: click.Group) -> None:
    group.add_command(get)


