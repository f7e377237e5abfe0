"""``orchestra export [KIND] [NAME]``: API-managed resources as YAML for git.

Prints multi-document YAML (``reconcile.export``) to standard output, ready
to save under the spec directory: ``orchestra validate`` accepts it and
``orchestra plan`` then shows the resources taken over by specs.
"""

from __future__ import annotations

import click

from orchestra.cli.context import AppContext
from orchestra.reconcile.export import to_yaml

KIND_BY_WORD = {"pool": "WorkPool", "pools": "WorkPool", "workpool": "WorkPool",
                "queue": "WorkQueue", "queues": "WorkQueue", "workqueue": "WorkQueue",
                "deployment": "Deployment", "deployments": "Deployment"}


class KindType(click.ParamType):
    """``deployment``, ``deployments`` or ``Deployment`` (any case), and so on for each kind."""

    name = "KIND"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        kind = KIND_BY_WORD.get(str(value).lower())
        if kind is None:
            self.fail(f"{value!r} is not a kind: use deployment, queue or pool", param, ctx)
        return kind


@click.command()
@click.argument("kind", type=KindType(), required=False)
@click.argument("name", required=False)
@click.pass_obj
def export(app: AppContext, kind: str | None, name: str | None) -> None:
    """Print API-managed resources (of KIND, named NAME) as spec YAML to move into git."""
    text = to_yaml(app.backend.export_documents(kind, name))
    if not text:
        click.echo("No API-managed resources to export.", err=True)
        return
    click.echo(text, nl=False)


def register(group: click.Group) -> None:
    group.add_command(export)
