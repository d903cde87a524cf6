"""The SDK balancer: `balance.BalancerCore` driven over httpx, with a live view of the service.

The core does all the non-I/O work (picks, retries, ejections, reports) in terms of `Outcome`;
`Balancer` and `AsyncBalancer` only translate httpx responses and errors into it, and run the two
background loops: following the registry with blocking queries, and flushing reports. If the
registry cannot be followed (unreachable, or any error at all) the balancer keeps using its last
view, says why in `stats()["stale"]`, backs off and keeps trying. A request that no instance
answered raises `AllFailed` (a `NoInstance`), naming each instance tried and what happened there.
Instances registered with `"protocol": "https"` are sent HTTPS, verified with the client's CA
bundle and shown its client certificate (`client.tls`), as a mesh's nodes authenticate each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Generator
from typing import Any, Protocol

import httpx

from ..balance import BalancerCore, Endpoint, NoInstance, Outcome
from ..errors import ApiError
from ..records import InstanceView, Report

__all__ = ["AllFailed", "AsyncBalancer", "AsyncRegistryClient", "Balancer", "NoInstance", "RegistryClient"]

REPORT_EVERY = 1.0


class AllFailed(NoInstance):
    """No instance answered a request; `tried` says, for each attempt, where it went and what happened."""

    def __init__(self, service: str, tried: list[str]) -> None:
        super().__init__(f"no instance of {service!r} answered: {'; '.join(tried)}")
        self.tried = tried


class RegistryClient(Protocol):
    """What the balancer needs from a `Client`."""

    tls: ssl.SSLContext | None

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

    tls: ssl.SSLContext | None

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
    return http.build_request(method, f"{endpoint.scheme}://{endpoint.address}:{endpoint.port}{path}", **kwargs)


def _outcome(response: httpx.Response | None, error: httpx.TransportError | None, started: float) -> Outcome:
    return Outcome(
        status=response.status_code if response is not None else None,
        refused=isinstance(error, httpx.ConnectError),
        latency=time.perf_counter() - started,
    )


def _attempt(endpoint: Endpoint, response: httpx.Response | None, error: httpx.TransportError | None) -> str:
    """One attempt, for `AllFailed`: `b1 at 10.0.0.1:8000: answered 503` or `...: ConnectError: refused`."""
    if response is not None:
        happened = f"answered {response.status_code}"
    else:
        happened = ": ".join(part for part in (type(error).__name__, str(error)) if part)
    return f"{endpoint.id} at {endpoint.address}:{endpoint.port}: {happened}"


def _answer(
    service: str, response: httpx.Response | None, error: httpx.TransportError | None, tried: list[str]
) -> httpx.Response:
    """What the caller gets once no retry is due: the last response, or `AllFailed` for the last error."""
    if response is not None:
        return response
    raise AllFailed(service, tried) from error


class Balancer:
    """Sync face: `balancer.request("GET", "/v1/models")` returns an `httpx.Response`."""

    def __init__(self, client: RegistryClient, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.Client(verify=client.tls or True)
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
        tried: list[str] = []
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
                tried.append(_attempt(endpoint, response, error))
                try:
                    endpoint = flow.send(_outcome(response, error, started))
                except StopIteration:
                    return _answer(self.core.service, response, error, tried)
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
    """Asyncio face: `await balancer.request("GET", "/v1/models")`.

    `async with client.balancer(...) as lb` starts it and closes it; `lb = await client.balancer(...)`
    starts it, and `await lb.aclose()` closes it.
    """

    def __init__(self, client: AsyncRegistryClient, service: str, **options: Any) -> None:
        self.core = BalancerCore(service, **options)
        self._client = client
        self._http = httpx.AsyncClient(verify=client.tls or True)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> AsyncBalancer:
        """Read the view, then follow the registry; once only."""
        if not self._tasks:
            self.core.followed(*await self._client.instances_at(self.core.service, **self.core.query))
            self._tasks = [asyncio.ensure_future(self._follow()), asyncio.ensure_future(self._report())]
        return self

    def __await__(self) -> Generator[Any, None, AsyncBalancer]:
        return self.start().__await__()

    async def request(
        self, method: str, path: str, *, key: str | None = None, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send to a picked instance; idempotent requests are retried elsewhere on failure."""
        flow = self.core.attempts_for(method, key)
        tried: list[str] = []
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
                tried.append(_attempt(endpoint, response, error))
                try:
                    endpoint = flow.send(_outcome(response, error, started))
                except StopIteration:
                    return _answer(self.core.service, response, error, tried)
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
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
