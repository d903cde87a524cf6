"""The SDK balancer: a live view of a service, picks, retries, outlier detection, reports.

`BalancerCore` does all the non-I/O work once: it keeps the pool (every instance, so that panic
mode can see the unhealthy ones), picks through `balance.Pool`, decides retries as a generator
that the sync and async faces drive (the way httpx drives its auth flows), ejects endpoints that
fail this client, and batches what it saw for `POST /v1/reports`. `Balancer` and `AsyncBalancer`
only send requests and run the two background loops: following the registry with blocking
queries, and flushing reports. If the registry becomes unreachable the balancer keeps using its
last view and says so in `stats()["stale"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from ..balance import STRATEGIES, Endpoint, PickRequest, Pool
from ..balance.budget import RetryBudget
from ..balance.outliers import OutlierDetector, OutlierSettings
from ..errors import ApiError, SwarmError
from ..records import HEALTHY, InstanceView, Report

if TYPE_CHECKING:
    from .client import AsyncClient, Client

log = logging.getLogger("swarm.balancer")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REPORT_EVERY = 1.0
MAX_REPORTS = 1000


class NoInstance(SwarmError):
    """No instance of the service can take the request."""


class Outcome(msgspec.Struct):
    response: httpx.Response | None = None
    error: Exception | None = None
    latency: float = 0.0


class BalancerCore:
    def __init__(
        self,
        service: str,
        *,
        strategy: str = "least_loaded",
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.service = service
        self.query: dict[str, Any] = {"selector": selector, "tags": tags, "all": True}
        self.attempts = max(attempts, 1)
        self.per_try_timeout = per_try_timeout
        self.budget = RetryBudget(retry_budget, min_retry_concurrency, clock=clock)
        self.pool = Pool(STRATEGIES[strategy], zone=zone, region=region, near=near, panic_threshold=panic_threshold)
        self.outliers = OutlierDetector(outliers, clock)
        self._clock = clock
        self._instances: list[InstanceView] = []
        self._reports: list[Report] = []
        self.counts = {"requests": 0, "retries": 0, "failures": 0, "budget_exhausted": 0, "ejections": 0}
        self.stale: str | None = None  # why the view may be out of date
        self.lock = threading.Lock()  # the sync face sends from many threads

    # --- the view -------------------------------------------------------------------------

    def update(self, instances: list[InstanceView]) -> None:
        with self.lock:
            self._instances = instances
            self.stale = None
            self._rebuild()

    def _rebuild(self) -> None:
        local = self.outliers.ejected
        healthy = {i.id for i in self._instances if i.status in HEALTHY and i.ejected is None and i.id not in local}
        self.pool.update((Endpoint.from_instance(i) for i in self._instances), lambda e: e.id in healthy)

    def lost_registry(self, why: str) -> None:
        if self.stale is None:
            log.warning("balancer for %s: the registry is unreachable (%s); using the last view", self.service, why)
        self.stale = why

    # --- one request ------------------------------------------------------------------------

    def attempts_for(self, method: str, key: str | None) -> Generator[Endpoint, Outcome, None]:
        """Yield where to send each attempt and receive how it went; ends when no retry is due."""
        request = PickRequest(key=key)
        tried: list[str] = []
        with self.lock:
            self.counts["requests"] += 1
            self.budget.request()
        for attempt in range(self.attempts):
            endpoint = self._pick(request, tried)
            if endpoint is None and not tried:
                raise NoInstance(f"no instance of {self.service!r} can take the request")
            if endpoint is None:  # nobody left to retry on: the last answer stands
                return
            if tried:
                with self.lock:
                    allowed = self.budget.try_retry()
                    self.counts["retries" if allowed else "budget_exhausted"] += 1
                if not allowed:
                    self._unpick(endpoint)
                    return
            try:
                outcome = yield endpoint
            finally:
                if tried:
                    with self.lock:
                        self.budget.retry_done()
            self._observe(endpoint, outcome)
            if self._ok(outcome) or attempt + 1 == self.attempts or method.upper() not in IDEMPOTENT:
                return
            tried.append(endpoint.id)

    def _unpick(self, endpoint: Endpoint) -> None:
        with self.lock:
            self.pool.load.finished(endpoint)

    def _pick(self, request: PickRequest, tried: list[str]) -> Endpoint | None:
        with self.lock:
            if self.outliers.release_due():
                self._rebuild()
            endpoint = self.pool.pick(request, exclude=tried)
            # Slow start: an endpoint back from ejection takes a growing share of what it is offered.
            if endpoint is not None and self.outliers.warmth(endpoint.id) < 1.0:
                warmth = self.outliers.warmth(endpoint.id)
                if (self.counts["requests"] * 0.618034) % 1.0 > warmth:
                    endpoint = self.pool.pick(request, exclude=[*tried, endpoint.id]) or endpoint
            if endpoint is not None:
                self.pool.load.started(endpoint)
            return endpoint

    @staticmethod
    def _ok(outcome: Outcome) -> bool:
        return outcome.error is None and outcome.response is not None and outcome.response.status_code < 500

    def _observe(self, endpoint: Endpoint, outcome: Outcome) -> None:
        ok = self._ok(outcome)
        code = outcome.response.status_code if outcome.response is not None else None
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
                        code=code,
                    )
                )
            refused = isinstance(outcome.error, httpx.ConnectError)
            if self.outliers.observe(endpoint.id, ok, len(self._instances), refused) is not None:
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
                "instances": len(self._instances),
                "in_pool": self.pool.size,
                "panic": self.pool.panic,
                "ejected": sorted(self.outliers.ejected),
                "stale": self.stale,
            }


def _build(
    http: httpx.Client | httpx.AsyncClient,
    core: BalancerCore,
    endpoint: Endpoint,
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> httpx.Request:
    kwargs.setdefault("timeout", core.per_try_timeout)
    return http.build_request(method, f"http://{endpoint.address}:{endpoint.port}{path}", **kwargs)


def _answer(outcome: Outcome) -> httpx.Response:
    """What the caller gets once no retry is due: the last response, or the last error raised."""
    if outcome.response is not None:
        return outcome.response
    assert outcome.error is not None
    raise outcome.error


class Balancer:
    """Sync face: `balancer.request("GET", "/v1/models")` returns an `httpx.Response`."""

    def __init__(self, client: Client, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.Client()
        self._stop = threading.Event()
        found, self._index = client.instances_at(service, **self.core.query)  # type: ignore[misc]
        self.core.update(found)
        self._threads = [threading.Thread(target=loop, daemon=True) for loop in (self._follow, self._report)]
        for thread in self._threads:
            thread.start()

    def request(
        self, method: str, path: str, *, key: str | None = None, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send to a picked instance; idempotent requests are retried elsewhere on failure.

        With `stream=True` the body is not read: close the response when done with it.
        """
        flow = self.core.attempts_for(method, key)
        endpoint = next(flow)
        while True:
            started = time.perf_counter()
            try:
                request = _build(self._http, self.core, endpoint, method, path, kwargs)
                outcome = Outcome(response=self._http.send(request, stream=stream))
            except httpx.TransportError as exc:
                outcome = Outcome(error=exc)
            outcome.latency = time.perf_counter() - started
            try:
                endpoint = flow.send(outcome)
            except StopIteration:
                return _answer(outcome)
            if outcome.response is not None:
                outcome.response.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                found, index = self._client.instances_at(  # type: ignore[misc]
                    self.core.service, index=self._index, wait=30, **self.core.query
                )
            except ApiError as exc:
                if self._stop.is_set():
                    return
                self.core.lost_registry(str(exc))
                self._stop.wait(1.0)
                continue
            if index != self._index:
                self._index = index
                self.core.update(found)

    def _report(self) -> None:
        while not self._stop.wait(REPORT_EVERY):
            self._flush()

    def _flush(self) -> None:
        reports = self.core.take_reports()
        if reports:
            with contextlib.suppress(ApiError):
                self._client.report(reports)  # type: ignore[attr-defined]

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def close(self) -> None:
        self._stop.set()
        self._flush()
        self._http.close()

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBalancer:
    """Asyncio face: `await balancer.request("GET", "/v1/models")`. Create with `await client.balancer(...)`."""

    def __init__(self, client: AsyncClient, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.AsyncClient()
        self._index = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> AsyncBalancer:
        found, self._index = await self._client.instances_at(self.core.service, **self.core.query)  # type: ignore[misc]
        self.core.update(found)
        self._tasks = [asyncio.ensure_future(self._follow()), asyncio.ensure_future(self._report())]
        return self

    async def request(
        self, method: str, path: str, *, key: str | None = None, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send to a picked instance; idempotent requests are retried elsewhere on failure."""
        flow = self.core.attempts_for(method, key)
        endpoint = next(flow)
        while True:
            started = time.perf_counter()
            try:
                request = _build(self._http, self.core, endpoint, method, path, kwargs)
                outcome = Outcome(response=await self._http.send(request, stream=stream))
            except httpx.TransportError as exc:
                outcome = Outcome(error=exc)
            outcome.latency = time.perf_counter() - started
            try:
                endpoint = flow.send(outcome)
            except StopIteration:
                return _answer(outcome)
            if outcome.response is not None:
                await outcome.response.aclose()

    async def _follow(self) -> None:
        while True:
            try:
                found, index = await self._client.instances_at(  # type: ignore[misc]
                    self.core.service, index=self._index, wait=30, **self.core.query
                )
            except ApiError as exc:
                self.core.lost_registry(str(exc))
                await asyncio.sleep(1.0)
                continue
            if index != self._index:
                self._index = index
                self.core.update(found)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            await self._flush()

    async def _flush(self) -> None:
        reports = self.core.take_reports()
        if reports:
            with contextlib.suppress(ApiError):
                await self._client.report(reports)  # type: ignore[attr-defined]

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBalancer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
