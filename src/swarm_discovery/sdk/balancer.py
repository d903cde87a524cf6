"""The SDK balancer: `balance.BalancerCore` driven over httpx, with a live view of the service.

The core does all the non-I/O work (picks, retries, ejections, reports) in terms of `Outcome`;
`Balancer` and `AsyncBalancer` only translate httpx responses and errors into it, and run the two
background loops: following the registry with blocking queries, and flushing reports. If the
registry cannot be followed (unreachable, or any error at all) the balancer keeps using its last
view, says why in `stats()["stale"]`, backs off and keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Protocol

import httpx

from ..balance import BalancerCore, Endpoint, NoInstance, Outcome
from ..errors import ApiError
from ..records import InstanceView, Report

__all__ = ["AsyncBalancer", "AsyncRegistryClient", "Balancer", "NoInstance", "RegistryClient"]

REPORT_EVERY = 1.0


class RegistryClient(Protocol):
    """What the balancer needs from a `Client`."""

    def instances_at(
        self,
        service: str,
        *,
        selector: str | None = ...,
        tags: list[str] | None = ...,
        all: bool = ...,
        index: int | None = ...,
        wait: float | None = ...,
    ) -> tuple[list[InstanceView], int]: ...

    def report(self, reports: list[Report]) -> Any: ...


class AsyncRegistryClient(Protocol):
    """What the balancer needs from an `AsyncClient`."""

    async def instances_at(
        self,
        service: str,
        *,
        selector: str | None = ...,
        tags: list[str] | None = ...,
        all: bool = ...,
        index: int | None = ...,
        wait: float | None = ...,
    ) -> tuple[list[InstanceView], int]: ...

    async def report(self, reports: list[Report]) -> Any: ...


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


def _outcome(response: httpx.Response | None, error: httpx.TransportError | None, started: float) -> Outcome:
    return Outcome(
        status=response.status_code if response is not None else None,
        refused=isinstance(error, httpx.ConnectError),
        latency=time.perf_counter() - started,
    )


def _answer(response: httpx.Response | None, error: httpx.TransportError | None) -> httpx.Response:
    """What the caller gets once no retry is due: the last response, or the last error raised."""
    if response is not None:
        return response
    assert error is not None
    raise error


class Balancer:
    """Sync face: `balancer.request("GET", "/v1/models")` returns an `httpx.Response`."""

    def __init__(self, client: RegistryClient, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.Client()
        self._stop = threading.Event()
        self.core.followed(*client.instances_at(service, **self.core.query))
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
        try:
            endpoint = next(flow)
            while True:
                started = time.perf_counter()
                response, error = None, None
                try:
                    request = _build(self._http, self.core, endpoint, method, path, kwargs)
                    response = self._http.send(request, stream=stream)
                except httpx.TransportError as exc:
                    error = exc
                try:
                    endpoint = flow.send(_outcome(response, error, started))
                except StopIteration:
                    return _answer(response, error)
                if response is not None:
                    response.close()
        finally:
            flow.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                found = self._client.instances_at(self.core.service, **self.core.follow_query())
            except Exception as exc:  # whatever it was, the view must not silently stop moving
                if self._stop.is_set():
                    return
                self._stop.wait(self.core.lost_registry(exc))
                continue
            self.core.followed(*found)

    def _report(self) -> None:
        while not self._stop.wait(REPORT_EVERY):
            self._flush()

    def _flush(self) -> None:
        reports = self.core.take_reports()
        if reports:
            with contextlib.suppress(ApiError):
                self._client.report(reports)

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

    def __init__(self, client: AsyncRegistryClient, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.AsyncClient()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> AsyncBalancer:
        self.core.followed(*await self._client.instances_at(self.core.service, **self.core.query))
        self._tasks = [asyncio.ensure_future(self._follow()), asyncio.ensure_future(self._report())]
        return self

    async def request(
        self, method: str, path: str, *, key: str | None = None, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send to a picked instance; idempotent requests are retried elsewhere on failure."""
        flow = self.core.attempts_for(method, key)
        try:
            endpoint = next(flow)
            while True:
                started = time.perf_counter()
                response, error = None, None
                try:
                    request = _build(self._http, self.core, endpoint, method, path, kwargs)
                    response = await self._http.send(request, stream=stream)
                except httpx.TransportError as exc:
                    error = exc
                try:
                    endpoint = flow.send(_outcome(response, error, started))
                except StopIteration:
                    return _answer(response, error)
                if response is not None:
                    await response.aclose()
        finally:
            flow.close()

    async def _follow(self) -> None:
        while True:
            try:
                found = await self._client.instances_at(self.core.service, **self.core.follow_query())
            except Exception as exc:  # whatever it was (cancellation is not an Exception), keep following
                await asyncio.sleep(self.core.lost_registry(exc))
                continue
            self.core.followed(*found)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            await self._flush()

    async def _flush(self) -> None:
        reports = self.core.take_reports()
        if reports:
            with contextlib.suppress(ApiError):
                await self._client.report(reports)

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
