"""Pools whose runner cannot be reached, and when to try them again.

A start that could not reach what runs the jobs (``runners.base.
Unreachable``: a Docker engine that is down or restarting) puts its run back
in the queue (``launching``), its attempt unspent: an engine restart, a
package upgrade, a daemon started before its engine, must not fail every run
that falls due meanwhile. Left at that, the next pass would claim the runs
again at once and spin. So the pool is left alone for a while (``HOLD_FIRST``
seconds, doubling up to ``HOLD_MAX``), then the runner is tried again (a
circuit breaker's half-open state); once it answers, the outage ends and the
pool's own limits apply again. Other pools of the worker go on meanwhile:
only the pool whose start failed waits.

The try is the runner's ``probe`` (a Docker ping), in a thread of its own,
when the runner has one: nothing is claimed while the engine stays away, so
an hour's outage leaves no trail of claims put back in the runs' histories,
and the first answer ends the outage, runs due or not. A runner without a
probe is tried with one run, whose start ends the outage.

An outage is a warning once (and every ``WARN_EVERY`` seconds while it
lasts), each later try an INFO line, and its end an INFO line, so a log
reader sees it begin and end without a line per due run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("orchestra.worker")

HOLD_FIRST = 2.0  # seconds a pool is left alone after its runner could not be reached
HOLD_MAX = 30.0  # the longest wait between tries of an engine that stays away
WARN_EVERY = 600.0  # seconds: an outage that lasts is a warning this often, the tries between it INFO lines

Probe = Callable[[], None]  # ``Runner.probe``: raises ``Unreachable`` while the runner cannot be reached


def in_a_thread(work: Callable[[], None]) -> None:
    """How a probe is run: it may block for the client's timeout, the loop must not."""
    threading.Thread(target=work, name="orchestra-probe", daemon=True).start()


@dataclass
class _Outage:
    began: float
    hold: float  # seconds the pool is left alone after a failed try
    until: float  # on the clock: no claim before then
    warned: float
    error: str
    probe: Probe | None = None
    probing: bool = False  # a probe is out; its answer is not known yet
    trying: bool = False  # one run was let through to try the runner; its start is not known yet


class Outages:
    """Per pool: is its runner away, and how many runs may a claim take meanwhile.

    The worker's loop calls every method; a probe's answer comes from its
    thread, which then calls ``wake`` so that the loop looks again at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, wake: Callable[[], None] = lambda: None,
                 run_probe: Callable[[Callable[[], None]], None] = in_a_thread) -> None:
        self._clock = clock
        self._wake = wake
        self._run_probe = run_probe
        self._pools: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def unreachable(self, pool: str, err: Exception) -> None:
        """A start in ``pool`` could not reach its runner: leave the pool alone for a while."""
        now = self._clock()
        probe: Probe | None = getattr(err, "probe", None)
        with self._lock:
            outage = self._pools.get(pool)
            if outage is None:
                outage = self._pools[pool] = _Outage(began=now, hold=HOLD_FIRST, until=now + HOLD_FIRST,
                                                    warned=now, error=str(err), probe=probe)
                log.warning("pool %r: %s; its runs wait in the queue, and the runner is tried again in %.0fs",
                            pool, err, outage.hold)
                return
            outage.probe = probe or outage.probe
            if not outage.trying:  # another start of the claim that began the outage
                return
            outage.trying = False
            self._failed_try(pool, outage, err, now)

    def _failed_try(self, pool: str, outage: _Outage, err: Exception, now: float) -> None:
        outage.error = str(err)
        outage.hold = min(outage.hold * 2, HOLD_MAX)
        outage.until = now + outage.hold
        warn = now - outage.warned >= WARN_EVERY
        if warn:
            outage.warned = now
        log.log(logging.WARNING if warn else logging.INFO,
                "pool %r: still %s (for %.0fs); the next try in %.0fs", pool, err, now - outage.began, outage.hold)

    def reached(self, pool: str) -> None:
        """A job of ``pool`` started: its runner is back, and the pool's own limits apply."""
        if pool not in self._pools:  # every start asks: no lock while no outage (the loop alone adds one)
            return
        with self._lock:
            self._end(pool, self._pools.get(pool))

    def _end(self, pool: str, outage: _Outage | None) -> None:
        if outage is not None and self._pools.get(pool) is outage:
            del self._pools[pool]
            log.info("pool %r: its runner is reachable again after %.0fs; its runs start", pool,
                     self._clock() - outage.began)

    def room(self, pool: str, wanted: int) -> int:
        """How many of ``wanted`` runs a claim in ``pool`` may take: none while it is left
        alone or its probe is out; without a probe, one to try the runner once that time
        is over (and none more until that start is known, or another hold has passed);
        else all."""
        if pool not in self._pools or wanted == 0:
            return wanted
        with self._lock:
            outage = self._pools.get(pool)
            if outage is None:
                return wanted
            now = self._clock()
            if now < outage.until:
                return 0
            outage.until = now + outage.hold  # a try that never comes back does not block the pool
            if outage.probe is None:
                outage.trying = True
                return 1
            if outage.probing:
                return 0
            outage.probing = True
            probe = outage.probe
        self._run_probe(lambda: self._probe(pool, outage, probe))
        return 0

    def _probe(self, pool: str, outage: _Outage, probe: Probe) -> None:
        """The probe's thread: ask, then tell the loop."""
        failure: Exception | None = None
        try:
            probe()
        except Exception as err:  # noqa: BLE001 - whatever it raised, the runner was not reached
            failure = err
        with self._lock:
            if self._pools.get(pool) is not outage:  # the outage ended meanwhile (a start got through)
                return
            outage.probing = False
            if failure is None:
                self._end(pool, outage)
            else:
                self._failed_try(pool, outage, failure, self._clock())
        self._wake()

    def retry_in(self, pool: str) -> float | None:
        """Seconds until ``pool`` may be claimed from again, while it is left alone; else None."""
        with self._lock:
            outage = self._pools.get(pool)
            left = outage.until - self._clock() if outage is not None else 0.0
        return left if left > 0 else None

    def current(self) -> list[tuple[str, str, float]]:
        """(pool, the last error, seconds since the outage began) for every pool in one:
        what ``orchestra status`` shows under the daemon."""
        with self._lock:
            now = self._clock()
            return [(pool, outage.error, now - outage.began) for pool, outage in sorted(self._pools.items())]
