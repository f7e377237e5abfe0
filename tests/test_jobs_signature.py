"""Parameter schemas derived from an entrypoint's signature, read with ast and never imported."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from orchestra.errors import FieldError
from orchestra.jobs import parameter_schema_from_entrypoint


def derive(tmp_path: Path, source: str, function: str = "main") -> dict[str, Any]:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "report.py").write_text(textwrap.dedent(source), encoding="utf-8")
    schema = parameter_schema_from_entrypoint(f"flows/report.py:{function}", tmp_path)
    Draft7Validator.check_schema(schema)
    return schema


def prop(tmp_path: Path, annotation: str, default: str | None = None) -> dict[str, Any]:
    """The property schema of ``x: <annotation> [= default]``."""
    suffix = f" = {default}" if default is not None else ""
    source = f"import typing\nfrom typing import *\ndef main(x: {annotation}{suffix}): ...\n"
    return derive(tmp_path, source)["properties"]["x"]


ANNOTATIONS = [
    ("int", {"type": "integer"}),
    ("float", {"type": "number"}),
    ("str", {"type": "string"}),
    ("bool", {"type": "boolean"}),
    ("list", {"type": "array"}),
    ("dict", {"type": "object"}),
    ("None", {"type": "null"}),
    ("list[str]", {"type": "array", "items": {"type": "string"}}),
    ("List[int]", {"type": "array", "items": {"type": "integer"}}),
    ("typing.List[int]", {"type": "array", "items": {"type": "integer"}}),
    ("set[str]", {"type": "array", "uniqueItems": True, "items": {"type": "string"}}),
    ("dict[str, int]", {"type": "object", "additionalProperties": {"type": "integer"}}),
    ("Dict[str, list[str]]", {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}),
    ("dict[str, Any]", {"type": "object"}),
    ("tuple[int, ...]", {"type": "array", "items": {"type": "integer"}}),
    ("tuple[int, str]", {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "minItems": 2,
                         "maxItems": 2}),
    ("Optional[int]", {"type": ["integer", "null"]}),
    ("int | None", {"type": ["integer", "null"]}),
    ("None | str", {"type": ["null", "string"]}),
    ("Union[int, str]", {"type": ["integer", "string"]}),
    ("int | float", {"type": ["integer", "number"]}),
    ("Optional[list[str]]", {"type": ["array", "null"], "items": {"type": "string"}}),
    ("Literal['eu', 'us']", {"type": "string", "enum": ["eu", "us"]}),
    ("typing.Literal[1, 2, 3]", {"type": "integer", "enum": [1, 2, 3]}),
    ("Literal['a', 1]", {"enum": ["a", 1]}),
    ("Optional[Literal['eu', 'us']]", {"type": ["string", "null"], "enum": ["eu", "us", None]}),
    ("Literal['eu'] | None", {"type": ["string", "null"], "enum": ["eu", None]}),
    ("Annotated[int, 'meta']", {"type": "integer"}),
    ("'int'", {"type": "integer"}),
    ("'list[str] | None'", {"type": ["array", "null"], "items": {"type": "string"}}),
    ("Any", {}),
    ("MyModel", {}),
    ("Optional[MyModel]", {}),
    ("int | MyModel", {}),
    ("Union[list[int], dict[str, int]]", {"anyOf": [{"type": "array", "items": {"type": "integer"}},
                                                    {"type": "object", "additionalProperties": {"type": "integer"}}]}),
    ("'not valid python ('", {}),
]


@pytest.mark.parametrize(("annotation", "expected"), ANNOTATIONS, ids=[a[0] for a in ANNOTATIONS])
def test_annotations(tmp_path: Path, annotation: str, expected: dict[str, Any]) -> None:
    assert prop(tmp_path, annotation) == expected


DEFAULTS = [
    ("'eu'", "eu"), ("3", 3), ("-1.5", -1.5), ("True", True), ("None", None), ("[1, 2]", [1, 2]),
    ("(1, 2)", [1, 2]), ("{'a': [1]}", {"a": [1]}),
]


@pytest.mark.parametrize(("source", "value"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_literal_defaults(tmp_path: Path, source: str, value: Any) -> None:
    assert prop(tmp_path, "Any", source) == {"default": value}


@pytest.mark.parametrize("source", ["datetime.now()", "CONSTANT", "{1, 2}", "b'x'", "float('nan')"])
def test_non_literal_defaults_make_the_parameter_optional_without_a_default(tmp_path: Path, source: str) -> None:
    schema = derive(tmp_path, f"def main(x={source}): ...\n")
    assert schema["properties"]["x"] == {}
    assert "required" not in schema


def test_a_whole_signature(tmp_path: Path) -> None:
    schema = derive(tmp_path, """
        from typing import Literal, Optional

        @flow(retries=2)
        def main(region: Literal["eu", "us"], day: str, full: bool = False, limit: Optional[int] = None,
                 *args, tags: list[str] = [], dry_run, **kwargs) -> int:
            return 0
    """)
    assert schema == {
        "type": "object",
        "properties": {
            "region": {"type": "string", "enum": ["eu", "us"]},
            "day": {"type": "string"},
            "full": {"type": "boolean", "default": False},
            "limit": {"type": ["integer", "null"], "default": None},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
            "dry_run": {},
        },
        "required": ["region", "day", "dry_run"],
        "additionalProperties": True,
    }


def test_without_kwargs_unknown_parameters_are_refused(tmp_path: Path) -> None:
    schema = derive(tmp_path, "def main(a: int = 1): ...\n")
    assert schema == {"type": "object", "properties": {"a": {"type": "integer", "default": 1}},
                      "additionalProperties": False}
    assert not Draft7Validator(schema).is_valid({"b": 1})


def test_no_parameters(tmp_path: Path) -> None:
    assert derive(tmp_path, "def main(): ...\n") == {"type": "object", "properties": {}, "additionalProperties": False}


def test_async_function_and_the_last_definition_wins(tmp_path: Path) -> None:
    schema = derive(tmp_path, "def main(a): ...\nasync def main(b: int): ...\n")
    assert list(schema["properties"]) == ["b"]


def test_positional_only_parameters(tmp_path: Path) -> None:
    assert derive(tmp_path, "def main(a=1, /, b=2): ...\n")["properties"] == {"b": {"default": 2}}
    with pytest.raises(FieldError, match="'a' is positional-only"):
        derive(tmp_path, "def main(a, /, b): ...\n")


def test_the_file_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    schema = derive(tmp_path, f"""
        import nonexistent_module_xyz
        open({str(marker)!r}, "w").write("ran")
        def main(x: int): ...
    """)
    assert schema["required"] == ["x"]
    assert not marker.exists()


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(FieldError) as caught:
        derive(tmp_path, "def ok(): ...\n\ndef main(x:\n    pass\n")
    assert caught.value.path == ("spec", "entrypoint")
    assert caught.value.message.startswith("flows/report.py:3:")
    assert "syntax error" in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="file 'flows/nope.py' not found") as caught:
        parameter_schema_from_entrypoint("flows/nope.py:main", tmp_path)
    assert caught.value.path == ("spec", "entrypoint")


def test_missing_function_lists_the_ones_there(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match=r"no top-level function 'main'.*\(functions: helper, other\)"):
        derive(tmp_path, "def helper(): ...\ndef other(): ...\nclass C:\n    def main(self): ...\n")


def test_a_function_not_made_with_def(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="parameterSchema"):
        derive(tmp_path, "main = lambda x: x\n")


@pytest.mark.parametrize("entrypoint", ["flows/report.py", "flows/report.py:", ":main", "a.py:1x"])
def test_malformed_entrypoint(tmp_path: Path, entrypoint: str) -> None:
    with pytest.raises(FieldError, match="expected 'path/to/file.py:function'"):
        parameter_schema_from_entrypoint(entrypoint, tmp_path)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.py").mkdir()
    with pytest.raises(FieldError, match="cannot read 'dir.py'"):
        parameter_schema_from_entrypoint("dir.py:main", tmp_path)
