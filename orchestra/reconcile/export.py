"""``orchestra export``: API-managed resources as spec documents to move into git.

The service behind ``orchestra export`` (``cli.export_cmd``) and
``GET /api/v1/export``. Each resource becomes ``apiVersion``, ``kind``,
``metadata`` and ``spec`` only: runtime state (pauses, generation, where it
came from) is not spec and stays out. Keys come in a stable order (the
envelope as above, ``metadata.name`` first, then every other mapping's
keys sorted), so exporting twice gives the same text and a diff shows only
real changes. The YAML is written so that orchestra's own loader (YAML 1.2
core schema) reads back exactly the stored values: a string that would
read as something else (``on``, ``0o17``, ``12:30``) is quoted. Committing
the output and applying it makes specs take the resources over (``plan``
shows an update noting the take-over, not a create and a delete).
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestra.errors import NotFound
from orchestra.jobs.secrets import masked_spec
from orchestra.specs.loader import resolve_plain
from orchestra.specs.model import API_VERSION
from orchestra.store import Store, StoredResource

MANAGER_API = "api"
KIND_ORDER = ("WorkPool", "WorkQueue", "Deployment")
HEADER = "# Exported by `orchestra export`: resources managed through the API, as specs.\n"


def exported_resources(store: Store, kind: str | None = None, name: str | None = None) -> list[StoredResource]:
    """The API-managed resources to export (of ``kind``, named ``name``), pools first."""
    candidates = store.list_resources(kind)
    if name is not None:
        candidates = [r for r in candidates if r.name == name]
        if not candidates:
            raise NotFound(f"{kind or 'resource'} {name!r} not found")
        spec_managed = [r for r in candidates if r.manager != MANAGER_API]
        if len(spec_managed) == len(candidates):
            r = spec_managed[0]
            raise NotFound(f"{r.kind}/{r.name} is not API-managed: it is already in specs "
                           f"({r.source_file}:{r.source_line})")
    chosen = [r for r in candidates if r.manager == MANAGER_API]
    return sorted(chosen, key=lambda r: (_kind_rank(r.kind), r.name))


def export_document(resource: StoredResource, pool: StoredResource | None = None) -> dict[str, Any]:
    """One resource as a spec document, keys in their stable order."""
    metadata = dict(_sorted(resource.metadata))
    ordered_metadata = {"name": metadata.pop("name", resource.name), **metadata}
    return {"apiVersion": API_VERSION, "kind": resource.kind, "metadata": ordered_metadata,
            "spec": _sorted(masked_spec(resource.kind, resource.spec, pool.spec if pool else None))}  # no secret out


def export_documents(store: Store, kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    pools = {p.name: p for p in store.list_resources("WorkPool")}  # they mark secret job variables
    return [export_document(r, pools.get(r.spec.get("pool"))) for r in exported_resources(store, kind, name)]


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Multi-document YAML; empty text when there is nothing to export."""
    if not documents:
        return ""
    body = yaml.dump_all(documents, Dumper=_SpecDumper, sort_keys=False, explicit_start=True,
                         allow_unicode=True, default_flow_style=False, width=120)
    return HEADER + body


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def _sorted(value: Any) -> Any:
    """Mappings with sorted keys, all the way down; lists keep their order."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


class _SpecDumper(yaml.SafeDumper):
    """SafeDumper whose strings read back as the same strings under YAML 1.2."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if resolve_plain(value) != value or not isinstance(resolve_plain(value), str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


_SpecDumper.add_representer(str, _represent_str)
