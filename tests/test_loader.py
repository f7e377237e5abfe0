"""The YAML loader: positions, YAML 1.2 scalars, duplicates, unsafe tags, alias bombs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestra.specs.loader import LoadError, load_text, spec_files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on", "on"), ("off", "off"), ("no", "no"), ("yes", "yes"), ("y", "y"),
        ("012", 12), ("0o17", 15), ("0x1F", 31), ("12:30", "12:30"), ("1_000", "1_000"),
        ("true", True), ("False", False), ("~", None), ("null", None), ("1.5", 1.5), ("1e3", 1000.0),
        (".inf", math.inf), ("-.inf", -math.inf), ("'012'", "012"), ('"on"', "on"), ("!!str 12", "12"),
        ("!!float 1", 1.0), ("2024-01-01", "2024-01-01"),
    ],
)
def test_scalars_resolve_as_yaml_1_2(text: str, expected: object) -> None:
    value = load_text(f"key: {text}\n", "f.yaml")[0].value["key"]
    assert value == expected and type(value) is type(expected)


def test_positions_of_every_node_are_kept() -> None:
    doc = load_text("a:\n  b:\n    - x\n    - y: 1\n", "f.yaml")[0]
    assert doc.position(("a",)) == (1, 1)
    assert doc.position(("a", "b")) == (2, 3)
    assert doc.position(("a", "b", 1, "y")) == (4, 7)
    assert doc.position(("a", "b", 1, "missing")) == (4, 7)  # nearest ancestor


def test_many_documents_and_empty_ones_are_skipped() -> None:
    docs = load_text("---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n", "f.yaml")
    assert [d.value for d in docs] == [{"a": 1}, {"b": 2}]
    assert docs[1].position(("b",)) == (7, 1)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first defined at line 1)"),
        ("a: !!python/object/apply:os.system ['true']\n", 1, "not allowed"),
        ("a: !!python/name:os.system\n", 1, "not allowed"),
        ("a: !custom x\n", 1, "not allowed"),
        ("a: [1, 2\n", 2, "invalid YAML"),
        ("a: b: c\n", 1, "invalid YAML"),
        ("a: !!int x\n", 1, "not a valid !!int"),
    ],
)
def test_bad_yaml_is_an_error_with_its_position(text: str, line: int, fragment: str) -> None:
    with pytest.raises(LoadError) as info:
        load_text(text, "bad.yaml")
    diagnostic = info.value.diagnostic
    assert diagnostic.file == "bad.yaml" and diagnostic.line == line
    assert fragment in diagnostic.message


def test_alias_bomb_fails_fast() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(LoadError, match="alias bomb"):
        load_text("\n".join(lines) + "\n", "bomb.yaml")


def test_merge_keys_and_small_aliases_work() -> None:
    doc = load_text("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "f.yaml")[0]
    assert doc.value["item"] == {"x": 1, "y": 3}


def test_spec_files_skip_hidden_swap_and_backup_files(tmp_path: Path) -> None:
    for name in ["a.yaml", "sub/b.yml", ".hidden.yaml", "sub/.c.yaml.swp", "d.yaml~", ".git/e.yaml",
                 "#f.yaml#", "notes.txt"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x: 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in spec_files([tmp_path])]
    assert found == ["a.yaml", "sub/b.yml"]
