"""Fixtures shared by the whole suite: spec trees on disk and the CLI as a user types it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``orchestra ARGS`` in-process, in tmp_path, with its own store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCHESTRA_DB", raising=False)

    from orchestra.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a (dedented) file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


POOL = """
apiVersion: orchestra/v1
kind: WorkPool
metadata: {name: local}
spec: {type: process, concurrencyLimit: 4}
"""

DEPLOYMENT = """
apiVersion: orchestra/v1
kind: Deployment
metadata: {name: hello}
spec:
  command: ["echo", "hello {{ parameters.who }}"]
  pool: local
  parameters: {who: world}
  schedules:
    - cron: "30 2 * * *"
      timezone: Europe/Berlin
"""
