"""One route's instances behind one balancer, and the requests waiting for room among them.

A `Backend` is a `balance.BalancerCore` (the same strategies, retries, retry budget and outlier
detection as the SDK's balancer) built from a route's settings, fed by the registry's view, plus
an `Admission` queue: when every candidate is saturated, a request waits there, in order, until
a request to the backend finishes or fresh metrics arrive, for at most the route's
`queue_timeout`, and at most `max_queued` wait at once; past either it is refused with 429.

A model's backend spans services, so its endpoints are named `service/id` (ids are unique only
within a service); `reports()` turns them back into the registry's names.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Mapping

from ..balance import AiAware, BalancerCore, Signals
from ..balance.strategies import STRATEGIES, Strategy
from ..records import HEALTHY, InstanceView, Report
from .settings import Route

RETRY_STATUSES = frozenset({502, 503, 504})


class Admission:
    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._waiting: deque[asyncio.Future[bool]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    async def wait(self, deadline: float) -> bool:
        """Wait for room until `deadline` (loop time); False when the queue is full or time is up."""
        loop = asyncio.get_running_loop()
        if len(self._waiting) >= self.limit or loop.time() >= deadline:
            return False
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(waiter)
        # The deadline answers False rather than cancelling the waiter: a timer may fire a little
        # before loop.time() reaches it, and a cancellation then looked like the client's.
        timer = loop.call_at(deadline, _answer, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def wake(self, count: int = 1) -> None:
        """Let the first `count` waiters try again (all of them: `len(self)`)."""
        while count > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                count -= 1


def _answer(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def strategy_for(route: Route, signals: Mapping[str, Signals]) -> Callable[[], Strategy]:
    if route.strategy == "ai_aware":
        return functools.partial(AiAware, route.ai, signals)
    return STRATEGIES[route.strategy]


class Backend:
    def __init__(
        self, name: str, label: str, route: Route, signals: Mapping[str, Signals], qualified: bool = False
    ) -> None:
        self.name = name  # the service, or the model
        self.label = label  # in metrics and the status: the service, or model:NAME
        self.route = route
        self.qualified = qualified
        self.core = BalancerCore(
            name,
            strategy=strategy_for(route, signals),
            zone=route.zone,
            region=route.region,
            attempts=route.attempts,
            per_try_timeout=route.timeout,
            retry_statuses=RETRY_STATUSES,
        )
        self.admission = Admission(route.max_queued, route.queue_timeout)
        self.healthy = 0

    def update(self, instances: list[InstanceView]) -> None:
        self.core.update(instances)
        self.healthy = sum(1 for i in instances if i.status in HEALTHY and i.ejected is None)
        self.admission.wake(len(self.admission))  # new instances may have room

    def instance_id(self, endpoint_id: str) -> str:
        """The id the registry knows the instance by."""
        return endpoint_id.partition("/")[2] if self.qualified else endpoint_id

    def reports(self) -> list[Report]:
        reports = self.core.take_reports()
        if not self.qualified:
            return reports
        for report in reports:
            report.service, _, report.id = report.id.partition("/")
        return reports
