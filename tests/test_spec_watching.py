"""Watching the spec tree where it is not a plain directory that stays put: a system that
will not watch it, a symlink swapped to each new checkout, a directory made anew."""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.reconcile import watch as watch_module
from orchestra.reconcile.daemon import Daemon, DaemonSettings
from orchestra.store import Store, open_store
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


def pool_spec(limit: int) -> str:
    return f"apiVersion: orchestra/v1\nkind: WorkPool\nmetadata: {{name: local}}\nspec: {{type: process, concurrencyLimit: {limit}}}\n"


def checkout(root: Path, name: str, limit: int) -> Path:
    """A directory of specs, as git-sync or a release script makes one per revision."""
    directory = root / name
    directory.mkdir()
    (directory / "pool.yaml").write_text(pool_spec(limit))
    return directory


def point(link: Path, target: Path) -> None:
    """Swap ``link`` to ``target`` atomically (``ln -sfn`` to a temporary name, then rename)."""
    temporary = link.with_name(link.name + ".new")
    temporary.symlink_to(target.name)
    temporary.replace(link)


@contextlib.contextmanager
def watching(tmp_path: Path, path: Path) -> Iterator[tuple[Daemon, Store]]:
    """A started daemon watching ``path`` (its 30 s resync by default), without a worker."""
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    daemon = Daemon(store, None, DaemonSettings(paths=[path]))
    try:
        daemon.start()
        yield daemon, store
    finally:
        daemon.stop()
        if daemon.watcher is not None:
            daemon.watcher.stop()
        store.close()


def applied_limit(daemon: Daemon, store: Store, limit: int, message: str) -> None:
    """Pass the loop until the pool's limit is ``limit``: well before the 30 s resync,
    so only a watch (or following the path) can have noticed."""
    wait_for(lambda: daemon.run_once() is not None
             and store.get_resource("WorkPool", "local").spec.get("concurrencyLimit") == limit,
             timeout=5, interval=0.05, message=message)


@pytest.mark.timeout(60)
def test_a_symlink_swapped_to_a_new_checkout_is_followed(tmp_path: Path) -> None:
    """``orchestra daemon /srv/specs/current`` beside git-sync: each revision is a new
    directory and ``current`` is swapped to it; the old one is left (deleted later)."""
    current = tmp_path / "current"
    current.symlink_to(checkout(tmp_path, "rev1", 1).name)
    with watching(tmp_path, current) as (daemon, store):
        assert store.get_resource("WorkPool", "local").spec["concurrencyLimit"] == 1
        point(current, checkout(tmp_path, "rev2", 2))  # nothing under the watched rev1 changes
        applied_limit(daemon, store, 2, "the swap to rev2 applied")
        (tmp_path / "rev2" / "pool.yaml").write_text(pool_spec(3))  # an event, from rev2's watch
        applied_limit(daemon, store, 3, "an edit under rev2 applied")
        point(current, checkout(tmp_path, "rev3", 4))
        applied_limit(daemon, store, 4, "the swap to rev3 applied")
        (tmp_path / "rev2" / "pool.yaml").write_text(pool_spec(9))  # no longer what the specs are
        (tmp_path / "rev3" / "pool.yaml").write_text(pool_spec(5))
        applied_limit(daemon, store, 5, "an edit under rev3 applied")


@pytest.mark.timeout(60)
def test_a_spec_directory_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    specs = checkout(tmp_path, "specs", 1)
    with watching(tmp_path, specs) as (daemon, store):
        shutil.rmtree(specs)
        wait_for(lambda: daemon.run_once() is not None and daemon.specs.last_errors,
                 timeout=5, interval=0.05, message="the missing directory reported")
        assert "No such file or directory" in daemon.specs.last_errors[0]
        assert store.get_resource("WorkPool", "local").spec["concurrencyLimit"] == 1  # the last good state
        checkout(tmp_path, "specs", 2)
        applied_limit(daemon, store, 2, "the new directory applied")
        (specs / "pool.yaml").write_text(pool_spec(3))
        applied_limit(daemon, store, 3, "an edit in the new directory applied")


@pytest.mark.timeout(60)
def test_a_new_target_that_cannot_be_watched_is_looked_at_every_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    current = tmp_path / "current"
    current.symlink_to(checkout(tmp_path, "rev1", 1).name)
    with watching(tmp_path, current) as (daemon, store), caplog.at_level(logging.INFO, logger="orchestra.daemon"):
        assert daemon.watcher is not None
        # A fake, as above: this machine does not run out of inotify watches.
        def refuse(*_: object, **__: object) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        monkeypatch.setattr(daemon.watcher.observer, "schedule", refuse)
        point(current, checkout(tmp_path, "rev2", 2))
        applied_limit(daemon, store, 2, "the swap applied though rev2 cannot be watched")
        (tmp_path / "rev2" / "pool.yaml").write_text(pool_spec(3))  # no event: found by the resync
        applied_limit(daemon, store, 3, "an edit under the unwatched rev2 applied")
        warnings = [r for r in caplog.records if "cannot watch a spec path" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # not one per look
        assert sum("leads somewhere else" in r.getMessage() for r in caplog.records) == 1
        monkeypatch.undo()  # watches can be made again: the next look makes one
        wait_for(lambda: daemon.run_once() is not None and daemon.watcher is not None and daemon.watcher.complete,
                 timeout=5, interval=0.05, message="rev2 watched")
