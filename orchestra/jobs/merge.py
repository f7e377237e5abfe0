"""Deep merge of job variables, and the patch that records what was overridden.

``orchestra.jobs.template`` merges the pool defaults, the deployment's
``jobVariables`` and the run's job variables with ``deep_merge`` and stores
``variables_patch(defaults, merged)`` on the run, so that anyone can see
which defaults a run overrode. The merge rules are Kubernetes' strategic
merge without the strategies: objects merge key by key, lists and scalars
replace, ``null`` removes a key; a ``secretRef`` counts as a scalar. This
is the only module that imports ``jsonpatch`` for diffs; applying
``jobPatches`` lives in ``patches``.
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from orchestra.jobs.secrets import is_ref_shaped


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base``; neither input is changed.

    An override object merged where the base has no object is merged into
    an empty one, so its own ``null`` values are dropped too: a ``null``
    always means "absent", never a stored null.
    """
    return merge_layers(base, override)


def merge_layers(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge`` of several layers in order, copying ``base`` only once."""
    result = copy_json(base)
    for override in overrides:
        _merge_into(result, override)
    return result


def _merge_into(target: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if value is None:
            target.pop(key, None)
        elif is_ref_shaped(value):
            target[key] = copy_json(value)  # a secretRef replaces whole, like a scalar: never merged key by key
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict) or is_ref_shaped(target[key]):
                target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = copy_json(value)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data, several times faster than ``copy.deepcopy``.

    Rendering copies variables for every deployment on every ``plan``; other
    values (dates from YAML, which are immutable) are shared, not copied.
    """
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def variables_patch(defaults: dict[str, Any], merged: dict[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn ``defaults`` into ``merged``."""
    return list(jsonpatch.make_patch(defaults, merged).patch)
