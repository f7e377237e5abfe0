"""Watch spec directories and say "look again"; the only watchdog importer.

An event never carries meaning here (level-based reconcile): any create,
change, move or delete of a spec file only marks the tree dirty and wakes
the daemon, which re-reads everything after a short debounce. Editors write
a temp file and rename it, ``git checkout`` touches many files at once, and
a file can be caught half-written; the debounce and the "apply only a valid
state" rule handle all three. Because events can be lost (network file
systems, overflowing inotify queues), the daemon also resyncs from a cheap
fingerprint of the tree (paths, sizes, modification times) now and then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

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


class SpecWatcher:
    """Calls ``on_change`` (from watchdog's thread) whenever the spec tree may have changed."""

    def __init__(self, paths: list[Path], on_change: Callable[[], None]) -> None:
        self.paths = paths
        self.observer = Observer()
        self.handler = _Handler(on_change)

    def start(self) -> None:
        """Start watching; ``OSError`` where the system refuses (inotify's limits), with nothing left running."""
        for path in self.paths:
            target = path if path.is_dir() else path.parent
            self.observer.schedule(self.handler, str(target), recursive=path.is_dir())
        self.observer.daemon = True
        try:
            self.observer.start()
        except OSError:
            self.observer.stop()  # the watches of the paths that did start
            if self.observer.is_alive():
                self.observer.join(timeout=5)
            raise

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
