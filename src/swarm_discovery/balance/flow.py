"""The balancer itself, transport neutral: a live view, picks, retries, ejections, reports.

`BalancerCore` does all the non-I/O work once, for the SDK (httpx) and the gateway (aiohttp)
alike. It keeps the pool (every instance, so that panic mode can see the unhealthy ones), picks
through `Pool`, decides retries as a generator that a sync or an async runner drives (the way
httpx drives its auth flows), ejects endpoints that fail this client, and batches what it saw for
`POST /v1/reports`. A runner only translates what its transport gave into an `Outcome`:

    flow = core.attempts_for(method, key)
    try:
        endpoint = next(flow)
        while True:
            ...send to endpoint...
            try:
                endpoint = flow.send(Outcome(status=..., refused=..., latency=...))
            except StopIteration:
                return the last answer
    finally:
        flow.close()  # an abandoned attempt (cancelled, or an error of the runner's own) is released

It also keeps the state of following the registry: the index to block on, whether the view is
stale and why, and how long to back off after a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Generator
from typing import Any

import msgspec

from ..errors import ApiError, SwarmError
from ..records import HEALTHY, InstanceView, Report
from .budget import RetryBudget
from .endpoints import Endpoint, PickRequest
from .members import Members
from .outliers import OutlierDetector, OutlierSettings
from .pool import Pool
from .strategies import STRATEGIES, Strategy

log = logging.getLogger("swarm.balancer")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_REPORTS = 1000
FOLLOW_WAIT = 30.0  # seconds a blocking query waits for a change
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
_NO_KEY = PickRequest()


class NoInstance(SwarmError):
    """No instance of the service can take the request."""


class Outcome(msgspec.Struct, frozen=True):
    """How one attempt went, in terms every transport can give."""

    status: int | None = None  # the answer's status code; None when no answer came (a transport error)
    refused: bool = False  # the connection was refused: nothing listens there any more
    latency: float = 0.0  # seconds
    sent: bool = True  # False: nothing of the request reached the instance, so a retry is safe for any method
    final: bool = False  # the runner cannot retry this attempt (its answer has begun reaching its caller)

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 500


class BalancerCore:
    def __init__(
        self,
        service: str,
        *,
        strategy: str | Callable[[], Strategy] = "least_loaded",
        selector: str | None = None,
        tags: list[str] | None = None,
        zone: str | None = None,
        region: str | None = None,
        near: tuple[float, float] | None = None,
        attempts: int = 3,
        per_try_timeout: float = 10.0,
        retry_budget: float = 0.2,
        min_retry_concurrency: int = 3,
        panic_threshold: float = 0.5,
        outliers: OutlierSettings | None = None,
        retry_statuses: Collection[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(strategy, str) and strategy not in STRATEGIES:
            raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.service = service
        self.query: dict[str, Any] = {"selector": selector, "tags": tags, "all": True}
        self.attempts = max(attempts, 1)
        self.per_try_timeout = per_try_timeout
        # The answers worth trying elsewhere; None: any 5xx. Others still count as failures.
        self.retry_statuses = frozenset(retry_statuses) if retry_statuses is not None else None
        self.budget = RetryBudget(retry_budget, min_retry_concurrency, clock=clock)
        factory = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
        self.pool = Pool(factory, zone=zone, region=region, near=near, panic_threshold=panic_threshold)
        self.outliers = OutlierDetector(outliers, clock)
        self._members = Members()
        self._healthy: set[str] = set()  # by the registry's word
        self._reports: list[Report] = []
        self.counts = {"requests": 0, "retries": 0, "failures": 0, "budget_exhausted": 0, "ejections": 0}
        self.index = 0  # the registry's change index the view is current at
        self.stale: str | None = None  # why the view may be out of date
        self._failures = 0  # in a row, following the registry
        self.lock = threading.Lock()  # the sync face sends from many threads

    # --- the view -------------------------------------------------------------------------

    def update(self, instances: list[InstanceView]) -> None:
        with self.lock:
            self.stale = None
            if self._members.update(instances):
                # Forget those that left, unless a request to one is still in flight.
                keep = self._members.ids | self.pool.load.outstanding.keys()
                self.pool.load.retain(keep)
                self.outliers.retain(keep)
            self._healthy = {i.id or "" for i in instances if i.status in HEALTHY and i.ejected is None}
            self._rebuild()

    def _rebuild(self) -> None:
        healthy = self._healthy - self.outliers.ejected.keys() if self.outliers.ejected else self._healthy
        self.pool.update(self._members.endpoints, healthy)

    def follow_query(self) -> dict[str, Any]:
        """What to ask the registry next: block on the index we have, or, after a failure, read at once."""
        if self.stale is not None:
            return dict(self.query)
        return {**self.query, "index": self.index, "wait": FOLLOW_WAIT}

    def followed(self, instances: list[InstanceView], index: int) -> None:
        """The registry answered `follow_query()`."""
        self._failures = 0
        if index != self.index or self.stale is not None:
            self.index = index
            self.update(instances)

    def lost_registry(self, error: Exception) -> float:
        """Following the registry failed: keep the last view, say why; the seconds to wait before asking again."""
        expected = isinstance(error, ApiError)  # the registry is unreachable or refused: anything else is a bug
        why = str(error) if expected else f"{type(error).__name__}: {error}"
        if self.stale is None:
            log.warning(
                "balancer for %s: cannot follow the registry (%s); using the last view",
                self.service,
                why,
                exc_info=None if expected else error,
            )
        self.stale = why
        self._failures += 1
        return min(BACKOFF_FIRST * 2.0 ** (self._failures - 1), BACKOFF_MAX)

    # --- one request ------------------------------------------------------------------------

    def attempts_for(
        self, method: str, key: str | None, idempotent: bool | None = None
    ) -> Generator[Endpoint, Outcome, None]:
        """Yield where to send each attempt and receive how it went; ends when no retry is due.

        A failed attempt is retried elsewhere if the request is `idempotent` (by default: its
        method is) or nothing of it was sent. Close it if you stop early: an attempt in flight is
        then released without an observation.
        """
        if idempotent is None:
            idempotent = method in IDEMPOTENT or method.upper() in IDEMPOTENT
        request = PickRequest(key=key) if key is not None else _NO_KEY
        tried: list[str] = []
        with self.lock:
            self.counts["requests"] += 1
            self.budget.request()
            endpoint = self._pick(request, tried)
        if endpoint is None:
            raise NoInstance(f"no instance of {self.service!r} can take the request")
        for attempt in range(self.attempts):
            if attempt:
                with self.lock:
                    endpoint = self._pick(request, tried)
                    if endpoint is None:  # nobody left to retry on: the last answer stands
                        return
                    allowed = self.budget.try_retry()
                    self.counts["retries" if allowed else "budget_exhausted"] += 1
                    if not allowed:
                        self.pool.load.finished(endpoint)
                        return
            try:
                outcome = yield endpoint
            except BaseException:  # closed, cancelled or failed mid-attempt: nothing was seen
                self._unpick(endpoint)
                raise
            finally:
                if attempt:
                    with self.lock:
                        self.budget.retry_done()
            self._observe(endpoint, outcome)
            if outcome.ok or attempt + 1 == self.attempts or not self._retryable(outcome, idempotent):
                return
            tried.append(endpoint.id)

    def _retryable(self, outcome: Outcome, idempotent: bool) -> bool:
        if outcome.final:
            return False
        if outcome.status is not None and self.retry_statuses is not None and outcome.status not in self.retry_statuses:
            return False
        return idempotent or not outcome.sent

    def _unpick(self, endpoint: Endpoint) -> None:
        with self.lock:
            self.pool.load.finished(endpoint)

    def _pick(self, request: PickRequest, tried: list[str]) -> Endpoint | None:
        """Under the lock: the next pick, counted as started."""
        outliers = self.outliers
        if outliers.ejected and outliers.release_due():
            self._rebuild()
        endpoint = self.pool.pick(request, exclude=tried)
        if endpoint is None:
            return None
        # Slow start: an endpoint back from ejection takes a growing share of what it is offered.
        if outliers.warming:
            warmth = outliers.warmth(endpoint.id)
            if warmth < 1.0 and (self.counts["requests"] * 0.618034) % 1.0 > warmth:
                endpoint = self.pool.pick(request, exclude=[*tried, endpoint.id]) or endpoint
        self.pool.load.started(endpoint)
        return endpoint

    def _observe(self, endpoint: Endpoint, outcome: Outcome) -> None:
        ok = outcome.ok
        with self.lock:
            self.pool.load.finished(endpoint, outcome.latency if ok else None)
            if not ok:
                self.counts["failures"] += 1
            if len(self._reports) < MAX_REPORTS:
                self._reports.append(
                    Report(
                        service=self.service,
                        id=endpoint.id,
                        ok=ok,
                        latency_ms=round(outcome.latency * 1000, 3),
                        code=outcome.status,
                    )
                )
            if self.outliers.observe(endpoint.id, ok, len(self._members.endpoints), outcome.refused) is not None:
                self.counts["ejections"] += 1
                self._rebuild()

    def take_reports(self) -> list[Report]:
        with self.lock:
            reports, self._reports = self._reports, []
        return reports

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                **self.counts,
                "instances": len(self._members.endpoints),
                "in_pool": self.pool.size,
                "panic": self.pool.panic,
                "ejected": sorted(self.outliers.ejected),
                "stale": self.stale,
            }
