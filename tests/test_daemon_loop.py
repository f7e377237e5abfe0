"""The daemon's loop when its store cannot be written: one plain line per failed pass, and
what the pass could not write (a spec edit) is written by the next one that can."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from orchestra.reconcile import daemon as daemon_module
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.store import engine as engine_module
from orchestra.store import open_store

SPECS = """\
apiVersion: orchestra/v1
kind: WorkPool
metadata: {name: local}
spec: {type: process}
---
"""
QUEUE = """---
apiVersion: orchestra/v1
kind: WorkQueue
metadata: {name: urgent}
spec: {pool: local, priority: 1}
"""


@pytest.mark.timeout(30)
def test_a_pass_the_store_refuses_is_one_line_without_a_traceback_and_the_next_pass_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "all.yaml").write_text(SPECS)
    db = tmp_path / "o.db"
    store = open_store(f"sqlite:///{db}")
    daemon = Daemon(store, None, DaemonSettings(paths=[specs], watch=False, debounce=0))
    try:
        daemon.start()
        locker = sqlite3.connect(db, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # another process writing for longer than the busy timeout
            (specs / "all.yaml").write_text(SPECS + QUEUE)
            daemon.spec_changed()  # as the watcher would: the pass applies the edit, a write
            with caplog.at_level(logging.ERROR, logger="orchestra.daemon"):
                assert daemon._guarded_pass() == daemon_module.ERROR_BACKOFF
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        [record] = [r for r in caplog.records if "reconcile pass failed" in r.getMessage()]
        assert "database is locked" in record.getMessage()
        assert record.exc_info is None  # an operational failure, not a bug: no traceback per retry
        daemon._guarded_pass()
        assert [q.name for q in store.list_resources("WorkQueue")] == ["urgent"]  # applied once it could write
    finally:
        daemon.stop()
        store.close()
