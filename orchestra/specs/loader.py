"""Read YAML spec files into plain documents that remember where each node was.

Called by ``orchestra.specs.model`` (and nothing else parses YAML from
specs). PyYAML's C parser composes the node tree quickly; we then build plain
Python values ourselves instead of using PyYAML's constructor because we need
four things it does not give: the line and column of every node (so every
later error points at its source), duplicate keys as errors (PyYAML keeps the
last silently), YAML 1.2 core-schema scalars (``on``, ``no``, ``012`` and
``12:30`` mean what a reader expects, not YAML 1.1's booleans, octal and
sexagesimal numbers) and a budget on alias expansion so a "billion laughs"
file fails fast instead of eating the machine. Only standard tags are
accepted, so ``!!python/object`` and friends are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestra.diagnostics import Diagnostic

try:  # the C parser is several times faster; fall back when libyaml is absent
    from yaml.cyaml import CParser as _Parser

    _PURE = False
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml.parser import Parser as _Parser  # type: ignore[assignment]

    _PURE = True

PLAIN = "!orchestra/plain"
TAG = "tag:yaml.org,2002:"
MAX_NODES_PER_DOCUMENT = 200_000
SPEC_SUFFIXES = (".yaml", ".yml")

Position = tuple[int, int]  # 1-based line and column


@dataclass
class Document:
    """One YAML document: its value and the position of every node by path."""

    file: str
    index: int
    value: Any
    positions: dict[tuple[str | int, ...], Position] = field(default_factory=dict)

    def position(self, path: tuple[str | int, ...]) -> Position:
        """The position of ``path``, or of its nearest ancestor that has one."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))


class LoadError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


class _Composer(_Parser, yaml.reader.Reader, yaml.scanner.Scanner,  # type: ignore[misc]
                yaml.composer.Composer, yaml.resolver.BaseResolver):
    """C parser + composer whose resolver marks untagged plain scalars.

    Tags are resolved later with YAML 1.2 rules; explicit tags are kept as
    written so that non-standard ones can be refused.
    """

    def __init__(self, stream: str) -> None:
        if _PURE:  # pragma: no cover - depends on the PyYAML build
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            _Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
        else:
            _Parser.__init__(self, stream)
        yaml.resolver.BaseResolver.__init__(self)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers are used; skipping PyYAML's bookkeeping saves a call per node."""

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:
            return PLAIN
        if kind is ScalarNode:
            return TAG + "str"
        return TAG + ("seq" if kind is SequenceNode else "map")


_INT = re.compile(r"[-+]?[0-9]+$")
_OCT = re.compile(r"0o[0-7]+$")
_HEX = re.compile(r"0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INF = {".inf", ".Inf", ".INF"}
_NAN = {".nan", ".NaN", ".NAN"}


_MAYBE_SPECIAL = frozenset("0123456789+-.~nNtTfF")


def resolve_plain(text: str) -> Any:
    """Resolve an untagged plain scalar with the YAML 1.2 core schema."""
    if text and text[0] not in _MAYBE_SPECIAL:
        return text  # most scalars are words: skip the pattern checks
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        return int(text, 10)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    sign = -1.0 if text[:1] == "-" else 1.0
    if text.lstrip("+-") in _INF:
        return sign * math.inf
    if text in _NAN:
        return math.nan
    return text


class _Builder:
    """Turns a composed node tree into plain values, recording positions."""

    def __init__(self, file: str, doc: Document, *, merges: bool = True) -> None:
        self.file = file
        self.doc = doc
        self.merges = merges  # False when the text has no "<<" at all: no mapping needs expanding
        self.budget = MAX_NODES_PER_DOCUMENT

    def error(self, node: Node, message: str) -> LoadError:
        mark = node.start_mark
        return LoadError(Diagnostic(self.file, mark.line + 1, mark.column + 1, None, None, message))

    def build(self, node: Node, path: tuple[str | int, ...]) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self.error(node, "document too large: aliases expand beyond "
                             f"{MAX_NODES_PER_DOCUMENT} nodes (an alias bomb?)")
        mark = node.start_mark
        self.doc.positions.setdefault(path, (mark.line + 1, mark.column + 1))
        if node.__class__ is ScalarNode:
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            self.check_tag(node, "seq")
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        self.check_tag(node, "map")
        return self.mapping(node, path)

    def check_tag(self, node: Node, expected: str) -> None:
        if node.tag not in (TAG + expected, PLAIN):
            raise self.error(node, f"tag {node.tag!r} is not allowed in specs")

    def scalar(self, node: ScalarNode) -> Any:
        if node.tag == PLAIN:
            return resolve_plain(node.value)
        tag = node.tag[len(TAG):] if node.tag.startswith(TAG) else None
        if tag == "str":
            return node.value
        if tag in ("int", "float", "bool", "null"):
            value = resolve_plain(node.value)
            if tag == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if _type_name(value) == tag:
                return value
            raise self.error(node, f"{node.value!r} is not a valid !!{tag}")
        raise self.error(node, f"tag {node.tag!r} is not allowed in specs")

    def mapping(self, node: MappingNode, path: tuple[str | int, ...]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, Node] = {}
        for key_node, value_node in self.merged_pairs(node):
            if not isinstance(key_node, ScalarNode):
                raise self.error(key_node, "mapping keys must be plain scalars")
            key = self.scalar(key_node)
            key = key if isinstance(key, str) else _key_text(key)
            if key in seen:
                first = seen[key].start_mark
                raise self.error(key_node, f"duplicate key {key!r} (first defined at line {first.line + 1})")
            seen[key] = key_node
            child = path + (key,)
            mark = key_node.start_mark
            self.doc.positions[child] = (mark.line + 1, mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def merged_pairs(self, node: MappingNode) -> Iterator[tuple[Node, Node]] | list[tuple[Node, Node]]:
        """Expand ``<<: *anchor`` merge keys; explicit keys win over merged ones."""
        if not self.merges or not any(_is_merge_key(k) for k, _ in node.value):
            return node.value
        return self._with_merges(node)

    def _with_merges(self, node: MappingNode) -> Iterator[tuple[Node, Node]]:
        explicit = [(k, v) for k, v in node.value if not _is_merge_key(k)]
        names = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
        for key_node, value_node in node.value:
            if not _is_merge_key(key_node):
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.error(source, "a merge key '<<' needs a mapping or a list of mappings")
                for k, v in source.value:
                    if isinstance(k, ScalarNode) and k.value not in names:
                        names.add(k.value)
                        yield k, v
        yield from explicit


def _is_merge_key(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.value == "<<" and node.tag in (PLAIN, TAG + "merge")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return "int" if isinstance(value, int) else "float" if isinstance(value, float) else "str"


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def load_text(text: str, file: str) -> list[Document]:
    """Parse every non-empty document of ``text``; raises LoadError on the first problem."""
    merges = "<<" in text
    composer = _Composer(text)
    documents: list[Document] = []
    try:
        index = 0
        while composer.check_node():
            node = composer.get_node()
            if node is None:
                continue
            doc = Document(file=file, index=index, value=None)
            doc.value = _Builder(file, doc, merges=merges).build(node, ())
            index += 1
            if doc.value is not None:
                documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.context_mark and exc.problem and exc.context_mark.line + 1 != line:
            message += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise LoadError(Diagnostic(file, line, col, None, None, message)) from None
    except yaml.YAMLError as exc:
        raise LoadError(Diagnostic(file, 1, 1, None, None, f"invalid YAML: {exc}")) from None
    finally:
        composer.dispose()
    return documents


def spec_files(paths: list[Path]) -> list[Path]:
    """Every spec file under ``paths`` (recursively), sorted, hidden and backup files skipped."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p for p in path.rglob("*") if is_spec_file(p, root=path))
        else:
            found.add(path)
    return sorted(found)


def is_spec_file(path: Path, root: Path | None = None) -> bool:
    """Whether a path found while scanning is a spec file (not a swap, backup or hidden file)."""
    if path.suffix not in SPEC_SUFFIXES or not path.is_file():
        return False
    parts = path.relative_to(root).parts if root else (path.name,)
    return not any(p.startswith((".", "#", "~")) or p.endswith("~") for p in parts)
