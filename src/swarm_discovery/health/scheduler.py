"""The active-check scheduler: when each probe runs, never how.

Every active check has one entry in a timer heap (`Deadlines`). A check's first probe falls at a
random point in its interval, so checks added together (a restart, a large registration) spread
out instead of firing at once; after that it runs at a fixed rate. Each probe runs as its own
task with its own timeout, so a slow target delays nothing else, and a check whose previous probe
is still running skips a round rather than piling up. Results go to one sink, the registry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Hashable
from typing import Any

from ..telemetry import PROBE_LAG, PROBES
from .check import CheckRuntime, ProbeResult
from .deadlines import Deadlines
from .probes import GrpcProber, HttpProber, Prober, TcpProber

Sink = Callable[[Hashable, ProbeResult], None]


def default_probers() -> dict[str, Prober]:
    return {"http": HttpProber(), "tcp": TcpProber(), "grpc": GrpcProber()}


class Scheduler:
    def __init__(
        self,
        report: Sink,
        probers: dict[str, Prober] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._report = report
        self._probers = probers if probers is not None else default_probers()
        self._jitter = jitter
        self._checks: dict[Hashable, CheckRuntime] = {}
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._timers = Deadlines(self._due, clock)
        self._task: asyncio.Task[None] | None = None
        self._counters: dict[tuple[str, str], Any] = {}  # labels() costs a lock and a hash per probe

    def add(self, key: Hashable, check: CheckRuntime) -> None:
        self._checks[key] = check
        self._timers.set(key, self._jitter() * check.interval)

    def remove(self, key: Hashable) -> None:
        self._checks.pop(key, None)
        self._timers.cancel(key)
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()

    def __len__(self) -> int:
        return len(self._checks)

    def _due(self, key: Hashable, due: float) -> None:
        check = self._checks.get(key)
        if check is None:
            return
        now = self._timers.now()
        PROBE_LAG.observe(max(now - due, 0.0))
        # Fixed rate, but a loop that fell behind does not fire a burst of catch-up probes.
        self._timers.set_at(key, max(due + check.interval, now))
        if key in self._running:
            return
        task = asyncio.get_running_loop().create_task(self._probe(key, check))
        self._running[key] = task

    async def _probe(self, key: Hashable, check: CheckRuntime) -> None:
        try:
            prober = self._probers[check.spec.type]
            try:
                async with asyncio.timeout(check.timeout + 1.0):  # a backstop: probers time out themselves
                    result = await prober.probe(check)
            except TimeoutError:
                result = ProbeResult("critical", f"timed out after {check.spec.timeout}", check.timeout)
            counter = self._counters.get((check.spec.type, result.status))
            if counter is None:
                counter = self._counters[(check.spec.type, result.status)] = PROBES.labels(
                    check.spec.type, result.status
                )
            counter.inc()
            if self._checks.get(key) is check:
                self._report(key, result)
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._timers.run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for prober in self._probers.values():
            await prober.close()
