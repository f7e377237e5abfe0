"""The parameter schema of a Python entrypoint, read from its source with ``ast``.

A deployment with ``entrypoint: flows/report.py:main`` and no
``parameterSchema`` gets one derived here from ``main``'s signature, so that
``plan`` checks parameters before anything runs. Called by spec validation
(``orchestra.specs.parameters``). The file is parsed, never imported:
importing would run user code (and its imports) inside the daemon.

Annotations map to JSON Schema as far as they can be read without
executing anything: int, float, str, bool, list[X], dict[str, X],
tuple[...], Optional[X], X | None, Union[...], Literal[...], Annotated[X,
...], and string forward references; ``SecretStr`` and ``Secret`` mark the
parameter secret (a string, masked wherever shown). Anything else (a class
of the user's own) accepts any value, since the function will see plain JSON anyway.
"""

from __future__ import annotations

import ast
import json
import pathlib
from typing import Any

from orchestra.errors import FieldError

PATH = ("spec", "entrypoint")
Schema = dict[str, Any]

_SIMPLE: dict[str, Schema] = {
    "int": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"},
    "bool": {"type": "boolean"}, "None": {"type": "null"}, "NoneType": {"type": "null"},
    "list": {"type": "array"}, "List": {"type": "array"}, "Sequence": {"type": "array"},
    "tuple": {"type": "array"}, "Tuple": {"type": "array"}, "set": {"type": "array", "uniqueItems": True},
    "dict": {"type": "object"}, "Dict": {"type": "object"}, "Mapping": {"type": "object"},
    # A parameter annotated SecretStr (pydantic) or Secret is a secret: masked wherever shown (jobs.secrets).
    "SecretStr": {"type": "string", "writeOnly": True, "format": "password"},
    "Secret": {"type": "string", "writeOnly": True, "format": "password"},
}
_ARRAYS = ("list", "List", "Sequence", "Iterable", "set", "Set", "frozenset", "FrozenSet")
_OBJECTS = ("dict", "Dict", "Mapping", "MutableMapping")
_NULL: Schema = {"type": "null"}


def parameter_schema_from_entrypoint(entrypoint: str, base_dir: pathlib.Path) -> Schema:
    """A draft-07 schema of the keyword arguments ``file.py:function`` accepts."""
    file_part, name = _split(entrypoint)
    tree = _parse(base_dir / file_part, file_part)
    return _arguments_schema(_function(tree, name, file_part).args)


def _split(entrypoint: str) -> tuple[str, str]:
    file_part, _, name = entrypoint.rpartition(":")
    if not file_part or not name.isidentifier():
        raise FieldError(PATH, f"expected 'path/to/file.py:function', got {entrypoint!r}")
    return file_part, name


def _parse(path: pathlib.Path, shown: str) -> ast.Module:
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise FieldError(PATH, f"file {shown!r} not found (looked for {path})") from None
    except OSError as exc:
        raise FieldError(PATH, f"cannot read {shown!r}: {exc.strerror or exc}") from None
    try:
        return ast.parse(source, filename=shown)
    except SyntaxError as exc:
        raise FieldError(PATH, f"{shown}:{exc.lineno}:{exc.offset or 0}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # e.g. NUL bytes on Python 3.11
        raise FieldError(PATH, f"{shown}: cannot parse: {exc}") from None


def _function(tree: ast.Module, name: str, shown: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The last top-level ``def name`` (the one Python would bind)."""
    found = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    matches = [node for node in found if node.name == name]
    if matches:
        return matches[-1]
    defined = ", ".join(node.name for node in found) or "none"
    raise FieldError(PATH, f"{shown} has no top-level function {name!r} defined with def (functions: {defined}); "
                     "if it is built another way, give the deployment a parameterSchema")


def _arguments_schema(args: ast.arguments) -> Schema:
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for arg, default in _keyword_parameters(args):
        properties[arg.arg] = _property(arg, default)
        if default is None:
            required.append(arg.arg)
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = args.kwarg is not None
    return schema


def _keyword_parameters(args: ast.arguments) -> list[tuple[ast.arg, ast.expr | None]]:
    """Each parameter a keyword argument can fill, with its default expression (None: required).

    ``*args`` is left out; a positional-only parameter with a default is
    left out too (it keeps its default), one without cannot be called.
    """
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(args.posonlyargs, defaults):
        if default is None:
            raise FieldError(PATH, f"parameter {arg.arg!r} is positional-only, so it cannot be passed "
                             "as a keyword argument")
    pairs = [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]
    return pairs[len(args.posonlyargs):]


def _property(arg: ast.arg, default: ast.expr | None) -> Schema:
    schema = dict(_annotation(arg.annotation))
    if default is not None:
        value = _literal(default)
        if value is not _NO_VALUE:
            schema["default"] = value
    return schema


class _NoValue:
    pass


_NO_VALUE = _NoValue()


def _literal(node: ast.expr) -> Any:
    """The JSON value of a literal expression, or ``_NO_VALUE`` (a call, a name, a set...)."""
    try:
        return json.loads(json.dumps(ast.literal_eval(node), allow_nan=False))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_VALUE


def _annotation(node: ast.expr | None) -> Schema:
    if node is None:
        return {}
    if isinstance(node, ast.Constant):
        return _constant_annotation(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_annotation(node.left), _annotation(node.right)])
    if isinstance(node, ast.Subscript):
        return _generic(_name(node.value), _slice_items(node.slice))
    return dict(_SIMPLE.get(_name(node), {}))


def _constant_annotation(value: Any) -> Schema:
    if value is None:
        return dict(_NULL)
    if isinstance(value, str):  # a forward reference: "int", "list[str]"
        try:
            return _annotation(ast.parse(value, mode="eval").body)
        except SyntaxError:
            return {}
    return {}


def _name(node: ast.expr) -> str:
    """``List`` for ``List``, ``typing.List`` and ``t.List``."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _slice_items(node: ast.expr) -> list[ast.expr]:
    return list(node.elts) if isinstance(node, ast.Tuple) else [node]


def _generic(name: str, items: list[ast.expr]) -> Schema:
    if name == "Optional":
        return _nullable(_annotation(items[0]))
    if name == "Union":
        return _union([_annotation(item) for item in items])
    if name == "Literal":
        return _literal_schema(items)
    if name == "Annotated":
        return _annotation(items[0])
    if name in _ARRAYS:
        return _with_key({**_SIMPLE.get(name, {}), "type": "array"}, "items", _annotation(items[0]))
    if name in ("tuple", "Tuple"):
        return _tuple(items)
    if name in _OBJECTS and len(items) == 2:
        return _with_key({"type": "object"}, "additionalProperties", _annotation(items[1]))
    return dict(_SIMPLE.get(name, {}))


def _with_key(schema: Schema, key: str, value: Schema) -> Schema:
    """``schema`` with ``key: value`` unless ``value`` accepts anything anyway."""
    return {**schema, key: value} if value else schema


def _tuple(items: list[ast.expr]) -> Schema:
    if len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is Ellipsis:
        return _with_key({"type": "array"}, "items", _annotation(items[0]))
    return {"type": "array", "items": [_annotation(item) for item in items],
            "minItems": len(items), "maxItems": len(items)}


def _literal_schema(items: list[ast.expr]) -> Schema:
    values = [_literal(item) for item in items]
    if any(value is _NO_VALUE for value in values):
        return {}
    types = {_json_type(value) for value in values}
    schema: Schema = {"enum": values}
    return {"type": types.pop(), **schema} if len(types) == 1 else schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string"}.get(type(value), "object")


def _union(schemas: list[Schema]) -> Schema:
    if any(not schema for schema in schemas):
        return {}  # one member accepts anything, so the union does
    if all(set(schema) == {"type"} for schema in schemas):
        return {"type": _merged_types([schema["type"] for schema in schemas])}
    others = [schema for schema in schemas if schema != _NULL]
    if len(others) == 1:
        return _nullable(others[0])
    return {"anyOf": schemas}


def _merged_types(types: list[str | list[str]]) -> str | list[str]:
    flat: list[str] = []
    for kind in types:
        for item in [kind] if isinstance(kind, str) else kind:
            if item not in flat:
                flat.append(item)
    return flat[0] if len(flat) == 1 else flat


def _nullable(schema: Schema) -> Schema:
    """``schema`` that also accepts null."""
    if not schema:
        return {}
    result = dict(schema)
    if "enum" in result and None not in result["enum"]:
        result["enum"] = [*result["enum"], None]
    if "type" in result:
        result["type"] = _merged_types([result["type"], "null"])
        return result
    return result if "enum" in result else {"anyOf": [schema, dict(_NULL)]}
