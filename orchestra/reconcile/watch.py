"""Watch spec directories and say "look again"; the only watchdog importer.

An event never carries meaning here (level-based reconcile): any create,
change, move or delete of a spec file only marks the tree dirty and wakes
the daemon, which re-reads everything after a short debounce. Editors write
a temp file and rename it, ``git checkout`` touches many files at once, and
a file can be caught half-written; the debounce and the "apply only a valid
state" rule handle all three. Because events can be lost (network file
systems, overflowing inotify queues), the daemon also resyncs from a cheap
fingerprint of the tree (paths, sizes, modification times) now and then.

A watch follows a directory, not a name: where a spec path is a symlink that
is swapped to a new checkout (git-sync, a Kubernetes ConfigMap's ``..data``
above it, a ``current -> releases/N`` deploy), or the directory is removed
and made again, the old watch sees nothing more. ``SpecWatcher.follow``
notices that the path now leads to another directory and watches that one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from orchestra.specs.loader import SPEC_SUFFIXES, spec_files

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(paths: list[Path]) -> Fingerprint:
    """What changes when any spec file is added, removed or edited."""
    entries = []
    for path in spec_files(paths):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def is_relevant(path: str) -> bool:
    """Spec files only; editors' swap, backup and temp files are not."""
    name = os.path.basename(path)
    if name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
        return False
    return name.endswith(SPEC_SUFFIXES)


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        if event.is_directory or any(is_relevant(p) for p in paths if p):
            self.on_change()


class _Target(NamedTuple):
    """The directory a spec path leads to now, by name and by identity."""

    directory: str
    recursive: bool
    device: int
    inode: int


def _target(path: Path) -> _Target | None:
    """What to watch for ``path``: the directory itself (recursively) or a file's
    directory, resolved through symlinks; None while it does not exist."""
    recursive = path.is_dir()
    directory = os.path.realpath(path if recursive else path.parent)
    try:
        stat = os.stat(directory)
    except OSError:
        return None
    return _Target(directory, recursive, stat.st_dev, stat.st_ino)


class SpecWatcher:
    """Calls ``on_change`` (from watchdog's thread) whenever the spec tree may have changed."""

    def __init__(self, paths: list[Path], on_change: Callable[[], None]) -> None:
        self.paths = paths
        self.observer = Observer()
        self.handler = _Handler(on_change)
        self._watches: dict[Path, tuple[_Target, ObservedWatch]] = {}

    def start(self) -> None:
        """Start watching; ``OSError`` where the system refuses (inotify's limits), with nothing left running."""
        self.observer.daemon = True
        try:
            for path in self.paths:
                self._watch(path)
            self.observer.start()
        except OSError:
            self.observer.stop()  # the watches of the paths that did start
            if self.observer.is_alive():
                self.observer.join(timeout=5)
            raise

    @property
    def complete(self) -> bool:
        """Whether every path is watched (not while one is missing or could not be watched)."""
        return len(self._watches) == len(self.paths)

    def follow(self) -> bool:
        """Watch each path where it leads now; whether any led elsewhere (or nowhere)
        since the last look, so that the tree may have changed unseen.

        Cheap (a ``realpath`` and a ``stat`` per path): the daemon calls it
        several times a second. ``OSError`` if a new directory cannot be
        watched; that path stays unwatched and is tried again at the next call.
        """
        moved = False
        for path in self.paths:
            target = _target(path)
            watched = self._watches.get(path)
            if watched is not None and watched[0] == target:
                continue
            moved = moved or watched is not None or target is not None
            if watched is not None:
                del self._watches[path]
                self.observer.unschedule(watched[1])
            if target is not None:
                self._watch(path, target)
        return moved

    def _watch(self, path: Path, target: _Target | None = None) -> None:
        target = target or _target(path)
        if target is None:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", str(path))
        watch = self.observer.schedule(self.handler, target.directory, recursive=target.recursive)
        self._watches[path] = (target, watch)

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
