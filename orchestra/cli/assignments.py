"""``--param k=v`` and ``--job-var a.b=v`` as a person types them.

Values are read as YAML 1.2 scalars or flow collections (``3`` is a number,
``true`` a boolean, ``[a, b]`` a list), except where the parameter schema
says the field is a string: then the text is taken as typed, so
``--param zip=01234`` stays "01234".
"""

from __future__ import annotations

from typing import Any

import click

from orchestra.specs.loader import LoadError, load_text


def parse_value(text: str) -> Any:
    try:
        documents = load_text(text, "<argument>")
    except LoadError:
        return text
    return documents[0].value if documents else None


def parse_assignments(items: tuple[str, ...], option: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``("a.b=1", "c=x")`` -> ``{"a": {"b": 1}, "c": "x"}``."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        parts = key.split(".")
        value = text if _is_string_field(schema, parts) else parse_value(text)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise click.BadParameter(f"{key!r} conflicts with an earlier value", param_hint=option)
        target[parts[-1]] = value
    return result


def _is_string_field(schema: dict[str, Any] | None, parts: list[str]) -> bool:
    node: Any = schema
    for part in parts:
        if not isinstance(node, dict):
            return False
        node = (node.get("properties") or {}).get(part)
    return isinstance(node, dict) and node.get("type") == "string"
