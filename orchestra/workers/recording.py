"""What one pass of the worker records, in one store write.

Between two passes, jobs started (the start threads hand each outcome over,
see ``launching``) and jobs ended (the worker polls its handles). A
``PassRecord`` turns both into the moves of one store write, in an order in
which the store checks each against what the one before left:

1. every started run Pending -> Running, and straight on to its end when its
   job has already ended (a short job costs one write for its whole life,
   not two: the store chains the moves, ``transitions.transition_seen``);
2. every run whose job could not start, to the end of its attempt;
3. every job that ended, to its end (or back to Scheduled for a retry).

After the write, ``settle`` sorts the store's answers (``Settled``): jobs to
supervise from now on, jobs whose whole life was recorded, jobs whose run
changed while they started (``lost``), and the answers for the ended jobs.
No I/O here: the worker writes, and acts on what is settled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestra.store import RUNNING, Run, evolve
from orchestra.workers.launching import NotStarted, Outcome, Started
from orchestra.workers.reporting import Move
from orchestra.workers.supervision import Supervised

Ended = tuple[Supervised, int]  # a job that ended, and its exit code


@dataclass
class Settled:
    """What became of a ``PassRecord``'s moves."""

    running: list[Supervised] = field(default_factory=list)  # recorded Running, still going
    finished: list[tuple[Supervised, Run]] = field(default_factory=list)  # started and ended, both recorded
    lost: list[Supervised] = field(default_factory=list)  # the run changed while the job started
    ended: list[Run | None] = field(default_factory=list)  # per ended job: its run after the move, or None


@dataclass
class PassRecord:
    """The moves of one pass, and how to read the store's answers to them."""

    started: list[Started]
    chained: set[str]  # run ids of started jobs whose end is recorded with their start
    not_started: list[NotStarted]
    ended: list[Ended]
    moves: list[Move]

    @classmethod
    def build(cls, outcomes: Sequence[Outcome], ended: Sequence[Ended], *,
              running_move: Callable[[Started], Move], end_move: Callable[[Supervised, int], Move]) -> PassRecord:
        started = [o for o in outcomes if isinstance(o, Started)]
        not_started = [o for o in outcomes if isinstance(o, NotStarted)]
        moves: list[Move] = []
        chained: set[str] = set()
        for job in started:
            moves.append(running_move(job))
            code = job.entry.handle.poll()
            if code is not None:  # decided from the run as the Running move leaves it
                job.entry.run = evolve(job.entry.run, {"state": RUNNING})
                moves.append(end_move(job.entry, code))
                chained.add(job.entry.run.id)
        moves += [o.move for o in not_started]
        moves += [end_move(entry, code) for entry, code in ended]
        return cls(started, chained, not_started, list(ended), moves)

    def abandon(self) -> None:
        """The pass failed before its write: kill the jobs it was to record as started
        (a job nobody supervises must not run on); their runs stay Pending until their
        lease runs out. The ended jobs stay where they are, polled again by the next pass."""
        for job in self.started:
            job.entry.handle.kill()

    def freed_pools(self) -> list[str]:
        """The pools a job ended in, in order: where a claim is likely to find room."""
        return [entry.run.pool for entry, _ in self.ended] + [
            job.entry.run.pool for job in self.started if job.entry.run.id in self.chained] + [
            o.run.pool for o in self.not_started]

    def settle(self, results: Sequence[Run | None]) -> Settled:
        """Sort ``results`` (per move, the run after it or None) by what they mean."""
        answers = iter(results)
        settled = Settled()
        for job in self.started:
            running = next(answers)
            end = next(answers) if job.entry.run.id in self.chained else None
            if running is None:
                settled.lost.append(job.entry)
                continue
            job.entry.run = running
            if end is not None:
                settled.finished.append((job.entry, end))
            else:  # still going, or its end needs deciding again: the next pass polls it
                settled.running.append(job.entry)
        for _ in self.not_started:
            next(answers)
        settled.ended = list(answers)
        return settled
