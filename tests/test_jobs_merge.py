"""deep_merge and variables_patch: the merge order's rules and the recorded overrides."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from orchestra.jobs.merge import deep_merge, merge_layers, variables_patch

MERGES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("empty override", {"a": 1}, {}, {"a": 1}),
    ("scalar replaces", {"a": 1}, {"a": 2}, {"a": 2}),
    ("new key added", {"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ("objects merge key by key", {"env": {"A": "1", "B": "2"}}, {"env": {"B": "x", "C": "3"}},
     {"env": {"A": "1", "B": "x", "C": "3"}}),
    ("lists replace", {"volumes": ["/a:/a", "/b:/b"]}, {"volumes": ["/c:/c"]}, {"volumes": ["/c:/c"]}),
    ("empty list replaces", {"volumes": ["/a:/a"]}, {"volumes": []}, {"volumes": []}),
    ("null removes a key", {"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ("null removes a nested key", {"env": {"A": "1", "B": "2"}}, {"env": {"A": None}}, {"env": {"B": "2"}}),
    ("null on an absent key is a no-op", {"a": 1}, {"zz": None}, {"a": 1}),
    ("nested three levels", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}}}, {"a": {"b": {"c": 1, "d": 3}}}),
    ("object replaces a scalar", {"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}}),
    ("scalar replaces an object", {"a": {"b": 2}}, {"a": 1}, {"a": 1}),
    ("nulls inside a new object are dropped", {}, {"env": {"A": None, "B": "2"}}, {"env": {"B": "2"}}),
    ("nulls inside lists stay (lists replace whole)", {}, {"l": [None, {"x": None}]}, {"l": [None, {"x": None}]}),
    ("false and zero are values, not removals", {"a": True, "b": 5}, {"a": False, "b": 0}, {"a": False, "b": 0}),
]


@pytest.mark.parametrize(("base", "override", "expected"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES])
def test_deep_merge(base: dict[str, Any], override: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy((base, override))
    assert deep_merge(base, override) == expected
    assert (base, override) == before  # inputs untouched


def test_deep_merge_shares_nothing_with_its_inputs() -> None:
    base = {"env": {"A": "1"}, "volumes": ["/a:/a"]}
    override = {"labels": {"x": "y"}, "extra": [[1]]}
    merged = deep_merge(base, override)
    merged["env"]["A"] = "changed"
    merged["volumes"].append("/b:/b")
    merged["labels"]["x"] = "changed"
    merged["extra"][0].append(2)
    assert base == {"env": {"A": "1"}, "volumes": ["/a:/a"]}
    assert override == {"labels": {"x": "y"}, "extra": [[1]]}


def test_merge_layers_applies_in_order() -> None:
    defaults = {"env": {}, "image": "python:3.12-slim", "network": None}
    deployment = {"env": {"A": "dep", "B": "dep"}, "image": "etl:1"}
    run = {"env": {"B": "run"}, "image": None}
    assert merge_layers(defaults, deployment, run) == {"env": {"A": "dep", "B": "run"}, "network": None}


PATCHES = [
    ("no change", {"a": 1}, {"a": 1}, []),
    ("replace", {"image": "x"}, {"image": "y"}, [{"op": "replace", "path": "/image", "value": "y"}]),
    ("add nested", {"env": {}}, {"env": {"A": "1"}}, [{"op": "add", "path": "/env/A", "value": "1"}]),
    ("remove", {"network": None, "a": 1}, {"a": 1}, [{"op": "remove", "path": "/network"}]),
]


@pytest.mark.parametrize(("defaults", "merged", "expected"), [p[1:] for p in PATCHES], ids=[p[0] for p in PATCHES])
def test_variables_patch(defaults: dict[str, Any], merged: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert variables_patch(defaults, merged) == expected


def test_variables_patch_round_trips() -> None:
    defaults = {"env": {"A": "1"}, "volumes": ["/a:/a"], "image": "x", "cpus": None}
    merged = deep_merge(defaults, {"env": {"A": None, "B": "2"}, "volumes": ["/b:/b", "/c:/c"], "cpus": 2})
    patch = variables_patch(defaults, merged)
    assert jsonpatch.apply_patch(defaults, patch) == merged
    assert all(isinstance(op, dict) for op in patch)
