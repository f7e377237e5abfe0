"""Output for every listing: a rich table on a terminal, plain columns in a
pipe, or stable JSON / YAML for scripts (``-o json|yaml``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml")


def output_option(*formats: str) -> Callable[..., Any]:
    choices = formats or FORMATS
    return click.option("-o", "--output", "fmt", type=click.Choice(choices), default=choices[0],
                        show_default=True, help="Output format.")


def is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    """A console that colours on a terminal and prints plain text in a pipe."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_data(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


def emit_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if is_terminal():
        table = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        console().print(table)
        return
    cells = [list(columns)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
