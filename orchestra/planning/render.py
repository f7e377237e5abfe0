"""Render a Plan as text, in Terraform's manner.

Separate from computing the plan so that the CLI, golden-text tests and the
UI share one rendering. Returns rich markup lines; the caller's console
decides whether colours are shown (a terminal) or stripped (a pipe).
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from orchestra.jobs.secrets import SENSITIVE
from orchestra.planning.diff import FieldChange
from orchestra.planning.plan import Change, Plan

SYMBOLS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}
OP_SYMBOLS = {"add": ("+", "green"), "replace": ("~", "yellow"), "remove": ("-", "red")}
MAX_VALUE_WIDTH = 120


def render_plan(plan: Plan, *, verb: str = "would") -> str:
    """The plan as rich markup text, ending with a summary line."""
    lines: list[str] = []
    if plan.changes:
        lines.append(f"orchestra {verb} perform the following actions:")
        lines.append("")
        for change in plan.changes:
            lines.extend(_change_lines(change))
            lines.append("")
    for note in plan.notes:
        lines.append(f"[cyan]Note:[/] {escape(note)}")
    if plan.notes:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def summary_line(plan: Plan) -> str:
    if not plan.changes:
        return f"[bold green]No changes.[/] The store matches the specs ({plan.unchanged} resources)."
    s = plan.summary
    return (f"[bold]Plan:[/] {s['create']} to create, {s['update']} to update, {s['delete']} to delete"
            f" ({plan.unchanged} unchanged).")


def _change_lines(change: Change) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    source = f"  [dim]({escape(change.source)})[/]" if change.source else ""
    lines = [f"  [{colour}]{symbol} {escape(change.ref)}[/]{source}"]
    for note in change.notes:
        lines.append(f"      [cyan]# {escape(note)}[/]")
    if change.action != "delete":
        lines.extend(f"      {_field_line(c)}" for c in change.diff)
    for runs in change.next_runs:
        times = ", ".join(runs.times) or "none"
        lines.append(f"      [dim]next runs of {escape(runs.schedule)} ({escape(runs.timezone)}): {escape(times)}[/]")
    return lines


def _field_line(change: FieldChange) -> str:
    symbol, colour = OP_SYMBOLS[change.op]
    path = escape(change.path)
    if change.op == "add":
        return f"[{colour}]{symbol}[/] {path}: {escape(_value(change.new))}"
    if change.op == "remove":
        return f"[{colour}]{symbol}[/] {path}: {escape(_value(change.old))}"
    return f"[{colour}]{symbol}[/] {path}: {escape(_value(change.old))} -> {escape(_value(change.new))}"


def _value(value: Any) -> str:
    if value == SENSITIVE:  # hidden by planning.diff; shown bare, as Terraform does
        return SENSITIVE
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= MAX_VALUE_WIDTH else text[: MAX_VALUE_WIDTH - 3] + "..."
