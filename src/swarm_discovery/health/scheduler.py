"""The active-check scheduler: when each probe runs, never how.

Every active check has one entry in a timer heap (`Deadlines`). A check's first probe falls at a
random point in its interval, so checks added together (a restart, a large registration) spread
out instead of firing at once; after that it runs at a fixed rate. Each probe runs as its own
task with its own timeout, so a slow target delays nothing else, and a check whose previous probe
is still running skips a round rather than piling up, and so does a probe the `ProbeGate` does not
admit (too many in flight for its target or registrant, or over its registrant's rate): the sink
hears a skipped result, which changes no status. Results go to one sink, the registry.

A prober that raises has failed the probe: the check goes critical with the error as its output,
and the error is logged once per check rather than every interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Hashable, Iterator
from functools import partial
from typing import Any

from ..durations import format_duration
from ..telemetry import PROBE_LAG, PROBES
from .check import CheckRuntime, ProbeResult
from .deadlines import Deadlines
from .limits import MAX_IN_FLIGHT, ProbeGate, ProbeSettings
from .probes import GrpcProber, HttpProber, Prober, TcpProber
from .scrape import ScrapeProber
from .targets import TargetPolicy

Sink = Callable[[Hashable, ProbeResult], None]
log = logging.getLogger("swarm.health")


def default_probers(policy: TargetPolicy, ca_file: str | None = None) -> dict[str, Prober]:
    http = HttpProber(policy, MAX_IN_FLIGHT, ca_file)
    scrape = ScrapeProber(policy, MAX_IN_FLIGHT, ca_file)  # a pool of its own: scrapes are long reads
    return {"http": http, "tcp": TcpProber(policy), "grpc": GrpcProber(policy), "metric": scrape}


def _failure(exc: Exception) -> str:
    """A raised error as one line of check output."""
    return " ".join(f"probe failed: {type(exc).__name__}: {exc}".split())


class Scheduler:
    def __init__(
        self,
        report: Sink,
        probers: dict[str, Prober] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        settings: ProbeSettings | None = None,
    ) -> None:
        settings = settings or ProbeSettings()
        self._report = report
        if probers is None:
            probers = default_probers(TargetPolicy(settings.allow, settings.deny, settings.server), settings.ca_file)
        self._probers = probers
        self._jitter = jitter
        self._gate = ProbeGate(settings, clock)
        self._checks: dict[Hashable, tuple[CheckRuntime, str]] = {}  # key -> (check, its registrant)
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._logged: set[Hashable] = set()  # checks whose prober raised and that were logged
        self._timers = Deadlines(self._due, clock)
        self._task: asyncio.Task[None] | None = None
        self._counters: dict[tuple[str, str], Any] = {}  # labels() costs a lock and a hash per probe
        # Whether this server probes the check (servers on one store share them out, cluster.py);
        # one that does not keeps its place in the heap, so it starts at once when it becomes ours.
        self.mine: Callable[[Hashable], bool] = lambda key: True

    def add(self, key: Hashable, check: CheckRuntime, registrant: str) -> None:
        self.remove(key)  # so that a replaced check leaves its registrant's count
        self._checks[key] = (check, registrant)
        self._gate.join(registrant)
        self._timers.set(key, self._jitter() * check.interval)

    def remove(self, key: Hashable) -> None:
        entry = self._checks.pop(key, None)
        self._timers.cancel(key)
        self._logged.discard(key)
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()
        if entry is None:
            return
        check, registrant = entry
        self._gate.leave(registrant)
        if (prober := self._probers.get(check.spec.type)) is not None:
            prober.forget(check)  # what only this check used (a gRPC channel) goes with it

    def __len__(self) -> int:
        return len(self._checks)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._checks)

    def _due(self, key: Hashable, due: float) -> None:
        entry = self._checks.get(key)
        if entry is None:
            return
        check, registrant = entry
        now = self._timers.now()
        PROBE_LAG.observe(max(now - due, 0.0))
        # Fixed rate, but a loop that fell behind does not fire a burst of catch-up probes.
        self._timers.set_at(key, max(due + check.interval, now))
        if key in self._running or not self.mine(key):
            return
        target = check.target or ("", 0)
        refusal = self._gate.admit(registrant, target)
        if refusal is not None:
            self._count(check, "skipped")
            self._report(key, ProbeResult(check.status, refusal, skipped=True))
            return
        task = asyncio.get_running_loop().create_task(self._probe(key, check))
        task.add_done_callback(partial(self._finished, key, registrant, target))
        self._running[key] = task

    def _count(self, check: CheckRuntime, result: str) -> None:
        counter = self._counters.get((check.spec.type, result))
        if counter is None:
            counter = self._counters[(check.spec.type, result)] = PROBES.labels(check.spec.type, result)
        counter.inc()

    async def _probe(self, key: Hashable, check: CheckRuntime) -> None:
        result = await self._result(key, check)
        self._count(check, result.status)
        entry = self._checks.get(key)
        if entry is not None and entry[0] is check:
            self._report(key, result)

    async def _result(self, key: Hashable, check: CheckRuntime) -> ProbeResult:
        started = time.perf_counter()
        try:
            prober = self._probers[check.spec.type]
            async with asyncio.timeout(check.timeout + 1.0):  # a backstop: probers time out themselves
                return await prober.probe(check)
        except TimeoutError:
            return ProbeResult("critical", f"timed out after {format_duration(check.timeout)}", check.timeout)
        except Exception as exc:  # a prober's bug or a target it cannot take: a failed probe all the same
            if key not in self._logged:
                self._logged.add(key)
                log.warning("check %s of %s: %s", check.name, key, _failure(exc), exc_info=exc)
            return ProbeResult("critical", _failure(exc), time.perf_counter() - started)

    def _finished(self, key: Hashable, registrant: str, target: tuple[str, int], task: asyncio.Task[None]) -> None:
        self._gate.release(registrant, target)  # also when cancelled: whatever ends a probe frees its place
        if self._running.get(key) is task:
            del self._running[key]
        # Retrieved here, so a sink that raised is logged now, not as "never retrieved" at exit.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("check %s: reporting a probe result failed", key, exc_info=exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._timers.run())

    async def stop(self) -> None:
        """Cancel the timer loop and every probe in flight, wait for them, then close the probers."""
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for prober in self._probers.values():
            await prober.close()
