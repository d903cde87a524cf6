"""Every check's live state, and what changes it: probes, heartbeats, lapses, metric rules.

The registry hands the monitor the checks of each owner (an instance or a node) and hears back,
through two callbacks, that an owner's health changed (republish it) or that it has been critical
for longer than `deregister_critical_after` (deregister it). Active probes come from the
`Scheduler`; TTL lapses from a timer heap, watched by `ExpiryGuard` against mass expiry.

Each check also has a registrant, whoever registered it, which the scheduler's limits and the
guard share things out by: the registry passes the one stored with the instance to `track`, and
without one it is the instance's service (or the node).

Metric checks are judged when the registry hands in new metrics (`judge`), never on a timer; a
scraped one's probe reads the metrics (handed to `on_metrics`, which judges them), and one with
`max_age` has a timer that makes it stale when no metrics came for that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence

from ..records import CheckSpec, CheckStatus
from ..selector import Bindings
from .check import CheckRuntime, ProbeResult
from .deadlines import Deadlines
from .limits import ProbeSettings
from .protection import ExpiryGuard
from .scheduler import Scheduler

Owner = tuple[str, ...]  # ("instance", service, id) or ("node", id)


def registrant_of(owner: Owner, registrant: str | None = None) -> str:
    """Who registered the owner's checks: `registrant` as stored with the instance (a caller's
    identity, handed in by the front), else the instance's service, or the node."""
    if registrant is not None:
        return registrant
    return f"service {owner[1]}" if owner[0] == "instance" else f"node {owner[1]}"


class HealthMonitor:
    def __init__(
        self,
        on_change: Callable[[Owner], None],
        on_critical_too_long: Callable[[Owner], None],
        scheduler: Scheduler | None = None,
        guard: ExpiryGuard | None = None,
        clock: Callable[[], float] = time.time,
        probes: ProbeSettings | None = None,
        on_output: Callable[[Owner], None] | None = None,
        on_metrics: Callable[[Owner, int, dict[str, float]], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_output = on_output  # a check's output changed, its status did not
        self._on_critical_too_long = on_critical_too_long
        self._on_metrics = on_metrics  # a scrape read the owner's metrics: (owner, its check's position, them)
        self._clock = clock
        self._checks: dict[Hashable, CheckRuntime] = {}
        # `is None`, not falsiness: an empty Scheduler has len() 0.
        self.scheduler = scheduler if scheduler is not None else Scheduler(self.report, settings=probes)
        self.guard = guard or ExpiryGuard()
        # ("ttl", *key): a TTL lapses; ("expire", *key): a lapse has waited its window;
        # ("deregister", *key): critical for deregister_critical_after; ("stale", *key): a metric
        # check's metrics are older than its max_age.
        self._timers = Deadlines(self._timer_fired)
        self._timer_task: asyncio.Task[None] | None = None

    def track(
        self, owner: Owner, specs: Sequence[CheckSpec], registrant: str | None = None, first: int = 0
    ) -> tuple[CheckRuntime, ...]:
        """Start the owner's checks, numbered from `first` among its checks."""
        if not specs:
            return ()
        registrant = registrant_of(owner, registrant)
        now = self._clock()
        runtimes = tuple(CheckRuntime(spec, first + i, now) for i, spec in enumerate(specs))
        for position, check in enumerate(runtimes, first):
            key = (*owner, position)
            self._checks[key] = check
            if check.ttl is not None:
                self._timers.set(("ttl", *key), check.ttl)
                self.guard.expect(key, registrant)
            elif check.rule is None or check.spec.scrape is not None:
                self.scheduler.add(key, check, registrant)
            if check.max_age is not None:
                self._timers.set(("stale", *key), check.max_age)
            self._arm_deregistration(key, check)
        return runtimes

    def untrack(self, owner: Owner, runtimes: Sequence[CheckRuntime], first: int = 0) -> None:
        for position in range(first, first + len(runtimes)):
            key = (*owner, position)
            self._checks.pop(key, None)
            self.scheduler.remove(key)
            self.guard.forget(key)
            for timer in ("ttl", "expire", "deregister", "stale"):
                self._timers.cancel((timer, *key))

    def judge(
        self,
        owner: Owner,
        runtimes: Sequence[CheckRuntime],
        bindings: Bindings,
        only: int | None = None,
        node: bool = False,
    ) -> bool:
        """Evaluate the owner's metric rules on new metrics: the heartbeat's rules (a scrape's check
        judges only what it scraped), or `only` the check at that position, or with `node` only the
        rules that read the node's new metrics. True when a status changed."""
        changed = False
        now = self._clock()
        for position, check in enumerate(runtimes):
            rule = check.rule
            if rule is None or (only is not None and position != only):
                continue
            if only is None and (check.spec.scrape is not None or (node and not rule.reads_node)):
                continue
            status, output = rule.judge(bindings, check.output)
            check.bindings = bindings
            if check.judge(status, output, now):
                changed = True
                self._arm_deregistration((*owner, position), check)
            if check.max_age is not None and not node:
                self._timers.set(("stale", *owner, position), check.max_age)
        return changed

    def heartbeat(
        self, owner: Owner, runtimes: Sequence[CheckRuntime], status: CheckStatus, output: str, age: float = 0.0
    ) -> bool:
        """Renew the owner's TTL checks, from a heartbeat received `age` seconds ago (relayed by
        another server); True when a status changed."""
        changed = False
        for position, check in enumerate(runtimes):
            if check.ttl is None:
                continue
            key = (*owner, position)
            self.guard.renewed(key)
            self._timers.cancel(("expire", *key))
            self._timers.set(("ttl", *key), max(check.ttl - age, 0.0))
            changed |= check.set(status, output, self._clock())
            self._arm_deregistration(key, check)
        return changed

    def lapse(self, owner: Owner, runtimes: Sequence[CheckRuntime]) -> None:
        """The owner's TTL ran out elsewhere (its lease in a shared store ended): its TTL checks
        that have not lapsed here yet do now, watched by the guard as their timers would be."""
        for position, check in enumerate(runtimes):
            timer = ("ttl", *owner, position)
            if check.ttl is not None and self._timers.pending(timer):
                self._timers.set(timer, 0.0)

    def report(self, key: Hashable, result: ProbeResult) -> None:
        """The sink for active probes."""
        check = self._checks.get(key)
        if check is None:
            return
        if result.metrics is not None and self._on_metrics is not None:
            check.output = result.output  # what a check that only gathers shows
            self._on_metrics(key[:-1], key[-1], result.metrics)  # type: ignore[index]  # judged there
            return
        output, now = check.output, self._clock()
        if check.rule is not None and not result.skipped:  # a scrape that failed: a failed evaluation
            changed = check.judge(result.status, f"scrape failed: {result.output}", now)
        else:
            changed = check.observe(result, now)
        if changed:
            self._arm_deregistration(key, check)
            self._on_change(key[:-1])  # type: ignore[index]
        elif check.output != output and self._on_output is not None:
            self._on_output(key[:-1])  # type: ignore[index]

    def _timer_fired(self, timer: Hashable, due: float) -> None:
        kind, key = timer[0], tuple(timer[1:])  # type: ignore[index]
        check = self._checks.get(key)
        if check is None:
            return
        if kind == "deregister":
            self._on_critical_too_long(key[:-1])
            return
        if kind == "stale":
            if check.stale(f"stale: no metrics for {check.spec.max_age}", self._clock()):
                self._arm_deregistration(key, check)
                self._on_change(key[:-1])
            return
        if kind == "ttl":
            self.guard.lapsed(key)
            self._timers.set(("expire", *key), self.guard.settings.window)
            return
        if self.guard.holds():
            # Too many lapsed together: the fault is more likely ours (a network cut) than theirs.
            self._timers.set(timer, 1.0)
            return
        self.guard.expired(key)
        if check.set("critical", f"TTL expired: no heartbeat for {check.spec.ttl}", self._clock()):
            self._arm_deregistration(key, check)
            self._on_change(key[:-1])

    def _arm_deregistration(self, key: Hashable, check: CheckRuntime) -> None:
        timer = ("deregister", *key)  # type: ignore[misc]
        if check.deregister_after is None or check.critical_since is None:
            self._timers.cancel(timer)
        elif check.critical_since is not None:
            elapsed = self._clock() - check.critical_since
            self._timers.set(timer, max(check.deregister_after - elapsed, 0.0))

    def start(self) -> None:
        self.scheduler.start()
        self._timer_task = asyncio.get_running_loop().create_task(self._timers.run())

    async def stop(self) -> None:
        """Cancel and wait for the timer loop and every probe in flight, then close the probers.
        Safe without `start`, and twice."""
        task, self._timer_task = self._timer_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.scheduler.stop()
