"""The jobs a remote worker process started, on its own disk, so that its successor can kill them.

A process job runs in a session of its own, so it survives a worker killed
with SIGKILL (or an OOM kill). On the daemon's machine the next daemon reaps
such survivors (``workers.recovery``); a remote worker's jobs run where the
daemon cannot reach them, and the daemon retries their runs once the lease
expires, so a survivor would run next to its own retry. Hence this journal:
each worker process keeps ``<log-dir>/.jobs/<its identity>.json`` (run id ->
runner ident of every job it runs), and a worker starting on the same log
directory kills what journals of dead worker processes still list.

Identities are ``workers.identity`` names (host, pid, process start time), so
a journal of a live worker sharing the directory is never touched, and a
reused PID is told apart. The runners refuse idents they did not make, and
the process runner kills a group only if it is provably the one it started.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from orchestra.runners.base import Runner
from orchestra.workers.identity import local_worker_alive, worker_identity

log = logging.getLogger("orchestra.worker")


class JobJournal:
    """This process's journal; not thread-safe (the worker's loop thread is its only writer)."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = log_dir / ".jobs"
        self.path = self.dir / f"{worker_identity()}.json"
        self._jobs: dict[str, str] = {}

    def add(self, run_id: str, ident: str) -> None:
        if self._jobs.get(run_id) != ident:
            self._jobs[run_id] = ident
            self._write()

    def remove(self, run_ids: Collection[str]) -> None:
        gone = [run_id for run_id in run_ids if run_id in self._jobs]
        for run_id in gone:
            del self._jobs[run_id]
        if gone:
            self._write()

    def close(self) -> None:
        """At a clean stop: drop the journal if every job of ours ended (else leave it to a successor)."""
        if not self._jobs:
            self.path.unlink(missing_ok=True)

    def reap_leftovers(self, runners: Mapping[str, Runner]) -> int:
        """Kill the jobs that dead worker processes' journals list; how many still ran."""
        killed = 0
        for journal in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            if journal == self.path or local_worker_alive(journal.stem) is not False:
                continue  # ours, a live worker's, or another host's
            for run_id, ident in _read(journal).items():
                if _reap(runners, ident):
                    killed += 1
                    log.warning("run %s: killed its job %s, left running by a worker that died", run_id[:12], ident)
            journal.unlink(missing_ok=True)
        return killed

    def _write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self._jobs))
        os.replace(temporary, self.path)


def _read(journal: Path) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads(journal.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _reap(runners: Mapping[str, Runner], ident: str) -> bool:
    for runner in runners.values():
        try:
            return bool(runner.reap_orphan(ident))
        except ValueError:
            continue  # another runner's ident
        except Exception as exc:  # an engine that cannot be asked now: say so, carry on
            log.warning("cannot check leftover job %s: %s", ident, exc)
            return False
    return False
