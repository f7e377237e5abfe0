"""The body of ``POST /api/v1/specs/plan|apply``: the spec files, read on this machine.

The daemon cannot see the client's files, so ``plan`` and ``apply`` with
``--api-url`` send what a local plan would read: every spec file under the
PATH arguments (found by the same ``spec_files``), and the Python files of
entrypoint deployments whose parameter schema comes from a function's
signature. Paths go as the user gave them, so the server's diagnostics and
the stored sources name the same files a local run names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra.diagnostics import Diagnostic, SpecError
from orchestra.specs.loader import spec_files
from orchestra.specs.validate import load_resources, spec_root


def spec_payload(paths: list[Path], *, prune: bool) -> dict[str, Any]:
    files = [_file_entry(path) for path in spec_files(paths)]
    return {"paths": [str(p) for p in paths], "files": files + entrypoint_sources(paths), "prune": prune}


def entrypoint_sources(paths: list[Path]) -> list[dict[str, str]]:
    """The Python files a server needs to derive entrypoint deployments' parameter schemas.

    A file that is missing or unreadable is left out: the server then reports
    it as a local plan would, at the deployment's ``entrypoint`` field.
    """
    specs = load_resources(paths)
    pools = specs.of_kind("WorkPool")
    root = spec_root(paths)
    found: dict[str, dict[str, str]] = {}
    for deployment in specs.of_kind("Deployment").values():
        spec = deployment.spec
        pool = pools.get(spec.get("pool", ""))
        if "entrypoint" not in spec or "parameterSchema" in spec or pool is None or pool.spec["type"] != "process":
            continue
        working_dir = (spec.get("jobVariables") or {}).get("workingDir") or "."
        source = root / working_dir / str(spec["entrypoint"]).rpartition(":")[0]
        try:
            found.setdefault(str(source), {"path": str(source), "text": source.read_text(encoding="utf-8")})
        except (OSError, UnicodeDecodeError):
            continue
    return list(found.values())


def _file_entry(path: Path) -> dict[str, str]:
    try:
        return {"path": str(path), "text": path.read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError) as exc:  # worded as a local plan words it
        raise SpecError([Diagnostic(str(path), 1, 1, None, None, f"cannot read file: {exc}")]) from None
