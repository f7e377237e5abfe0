"""The daemon where the system will not watch its spec tree: it looks for changes every second instead."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from orchestra.reconcile import watch as watch_module
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.store import open_store
from tests.waiting import wait_for

POOL = "apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {name: local}\nspec: {type: process}\n"
QUEUE = "apiVersion: orchestra/v1\nkind: WorkQueue\nmetadata: {name: urgent}\nspec: {pool: local, priority: 1}\n"


@pytest.mark.timeout(30)
def test_a_spec_tree_that_cannot_be_watched_is_looked_at_every_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A fake, for a boundary this machine cannot reach: its user namespace does not enforce
    # fs.inotify.max_user_watches or max_user_instances, so the observer is made to fail
    # to start as it does where they run out.
    def refuse(self: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watch_module.Observer, "start", refuse)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "pool.yaml").write_text(POOL)
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    daemon = Daemon(store, None, DaemonSettings(paths=[specs]))  # resync_interval: 30 s by default
    try:
        with caplog.at_level(logging.WARNING, logger="orchestra.daemon"):
            daemon.start()  # does not fail: the daemon runs without watching
        assert "cannot watch" in caplog.text and "inotify watch limit reached" in caplog.text
        assert "max_user_watches" in caplog.text
        assert [r.name for r in store.list_resources("WorkPool")] == ["local"]

        (specs / "queue.yaml").write_text(QUEUE)  # no event will say so
        wait_for(lambda: daemon.run_once() is not None and store.list_resources("WorkQueue"),
                 timeout=10, interval=0.1, message="the edit applied without an event")
    finally:
        daemon.stop()
        store.close()
