"""The Python SDK: `Client` (sync) and `AsyncClient`, one set of operations behind two faces.

Each operation is written once, as a generator that yields the HTTP request it needs and receives
the response (the way httpx drives its auth flows); `Client` runs it with a blocking send and
`AsyncClient` with an awaited one. Errors arrive as `ApiError` with the server's message, or
`Unreachable` when the server did not answer.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

import httpx
import msgspec

from ..errors import ApiError, Unreachable
from ..records import (
    CheckState,
    InstanceSpec,
    InstanceView,
    NodeSpec,
    NodeView,
    Report,
    ReportsAccepted,
    ServerInfo,
    ServiceSummary,
)
from .balancer import AsyncBalancer, Balancer

DEFAULT_ADDR = "http://127.0.0.1:8500"
T = TypeVar("T")
Operation = Generator[httpx.Request, httpx.Response, T]


class WatchEvent(msgspec.Struct, frozen=True):
    event: str  # snapshot, put or delete
    index: int
    data: str  # JSON: a list of instances (snapshot), an instance (put) or {service, id} (delete)


def server_address(addr: str | None = None) -> str:
    addr = addr or os.environ.get("SWARM_ADDR") or DEFAULT_ADDR
    return addr if "://" in addr else f"http://{addr}"


def _body(spec: msgspec.Struct | dict[str, Any] | None, fields: dict[str, Any]) -> bytes:
    if spec is not None and fields:
        raise TypeError("pass either a spec or keyword fields, not both")
    return msgspec.json.encode(spec if spec is not None else fields)


class Operations:
    """Everything the SDK can ask; no I/O happens here."""

    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = server_address(addr)
        token = token or os.environ.get("SWARM_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,
    ) -> httpx.Request:
        query = {k: v for k, v in (params or {}).items() if v is not None and v is not False and v != []}
        return httpx.Request(
            method,
            self.base_url + path,
            params=query,
            content=content,
            headers=self.headers,
            extensions={"timeout": httpx.Timeout(timeout or self.timeout).as_dict()},
        )

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"cannot reach the swarm server at {self.base_url}: {exc}")

    @staticmethod
    def _decode(response: httpx.Response, kind: type[T]) -> T:
        if response.status_code >= 400:
            try:
                message = msgspec.json.decode(response.content)["error"]
            except (msgspec.DecodeError, KeyError, TypeError):
                message = response.text or response.reason_phrase
            raise ApiError(response.status_code, message)
        return msgspec.json.decode(response.content, type=kind)

    def register(
        self, service: str, id: str, spec: InstanceSpec | dict[str, Any] | None = None, **fields: Any
    ) -> Operation[InstanceView]:
        path = f"/v1/services/{service}/instances/{id}"
        response = yield self._request("PUT", path, content=_body(spec, fields))
        return self._decode(response, InstanceView)

    def deregister(self, service: str, id: str) -> Operation[None]:
        response = yield self._request("DELETE", f"/v1/services/{service}/instances/{id}")
        self._decode(response, dict)

    def heartbeat(
        self,
        service: str,
        id: str,
        metrics: dict[str, float] | None = None,
        status: str | None = None,
        output: str | None = None,
    ) -> Operation[InstanceView]:
        beat = {k: v for k, v in {"metrics": metrics, "status": status, "output": output}.items() if v is not None}
        path = f"/v1/services/{service}/instances/{id}/heartbeat"
        response = yield self._request("PUT", path, content=msgspec.json.encode(beat))
        return self._decode(response, InstanceView)

    def maintenance(self, service: str, id: str, enable: bool, reason: str = "") -> Operation[InstanceView]:
        path = f"/v1/services/{service}/instances/{id}/maintenance"
        response = yield self._request("PUT", path, content=msgspec.json.encode({"enable": enable, "reason": reason}))
        return self._decode(response, InstanceView)

    def instances_at(
        self,
        service: str,
        *,
        selector: str | None = None,
        tags: list[str] | None = None,
        all: bool = False,
        near: str | None = None,
        limit: int | None = None,
        index: int | None = None,
        wait: float | None = None,
    ) -> Operation[tuple[list[InstanceView], int]]:
        """Instances and the change index they are current at; blocks while `index` is current."""
        params = {
            "selector": selector,
            "tag": tags or [],
            "all": "true" if all else None,
            "near": near,
            "limit": limit,
            "index": index,
            "wait": f"{wait}s" if wait is not None else None,
        }
        response = yield self._request(
            "GET", f"/v1/services/{service}", params=params, timeout=(wait or 0) + self.timeout
        )
        return self._decode(response, list[InstanceView]), int(response.headers.get("x-swarm-index", 0))

    def instances(self, service: str, **query: Any) -> Operation[list[InstanceView]]:
        found, _ = yield from Operations.instances_at(self, service, **query)
        return found

    def checks(self, service: str, id: str) -> Operation[list[CheckState]]:
        response = yield self._request("GET", f"/v1/services/{service}/instances/{id}/checks")
        return self._decode(response, list[CheckState])

    def report(self, reports: list[Report]) -> Operation[ReportsAccepted]:
        """Passive observations (what a request to an instance saw), for the server to aggregate."""
        response = yield self._request("POST", "/v1/reports", content=msgspec.json.encode(reports))
        return self._decode(response, ReportsAccepted)

    def services(self) -> Operation[list[ServiceSummary]]:
        response = yield self._request("GET", "/v1/services")
        return self._decode(response, list[ServiceSummary])

    def put_node(self, id: str, spec: NodeSpec | dict[str, Any] | None = None, **fields: Any) -> Operation[NodeView]:
        response = yield self._request("PUT", f"/v1/nodes/{id}", content=_body(spec, fields))
        return self._decode(response, NodeView)

    def node(self, id: str) -> Operation[NodeView]:
        response = yield self._request("GET", f"/v1/nodes/{id}")
        return self._decode(response, NodeView)

    def delete_node(self, id: str) -> Operation[None]:
        response = yield self._request("DELETE", f"/v1/nodes/{id}")
        self._decode(response, dict)

    def nodes(self, *, selector: str | None = None, kind: str | None = None) -> Operation[list[NodeView]]:
        response = yield self._request("GET", "/v1/nodes", params={"selector": selector, "kind": kind})
        return self._decode(response, list[NodeView])

    def server(self) -> Operation[ServerInfo]:
        response = yield self._request("GET", "/v1/server")
        return self._decode(response, ServerInfo)


_OPERATIONS = [name for name, value in vars(Operations).items() if callable(value) and not name.startswith("_")]


def _with_runner(runner: Callable[[Callable[..., Operation[Any]]], Callable[..., Any]]) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        for name in _OPERATIONS:
            setattr(cls, name, runner(getattr(Operations, name)))
        return cls

    return decorate


def _sync(operation: Callable[..., Operation[Any]]) -> Callable[..., Any]:
    @functools.wraps(operation)
    def run(self: Client, *args: Any, **kwargs: Any) -> Any:
        flow = operation(self, *args, **kwargs)
        request = next(flow)
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            try:
                request = flow.send(response)
            except StopIteration as done:
                return done.value

    return run


def _async(operation: Callable[..., Operation[Any]]) -> Callable[..., Any]:
    @functools.wraps(operation)
    async def run(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        flow = operation(self, *args, **kwargs)
        request = next(flow)
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            try:
                request = flow.send(response)
            except StopIteration as done:
                return done.value

    return run


@_with_runner(_sync)
class Client(Operations):
    """Blocking SDK client. `with Client() as c: c.instances("llm", selector=...)`."""

    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(addr, token, timeout)
        self._http = httpx.Client()

    def watch(self, service: str, wait: float = 60.0, **query: Any) -> Iterator[list[InstanceView]]:
        """Yield the matching instances now, then again each time they change (blocking queries)."""
        index = None
        while True:
            found, current = self.instances_at(service, index=index, wait=wait, **query)  # type: ignore[misc]
            if current != index:
                yield found
            index = current

    def events(self, service: str, selector: str | None = None, all: bool = False) -> Iterator[WatchEvent]:
        """The server's change stream (SSE) for one service: a snapshot, then every change."""
        request = self._request(
            "GET", "/v1/watch", params={"service": service, "selector": selector, "all": "true" if all else None}
        )
        request.extensions["timeout"] = httpx.Timeout(self.timeout, read=None).as_dict()
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        with contextlib.closing(response):
            if response.status_code >= 400:
                response.read()
                self._decode(response, dict)
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
                elif "data" in fields:
                    yield WatchEvent(fields.get("event", "message"), int(fields.get("id", 0)), fields["data"])
                    fields = {}

    def balancer(self, service: str, **options: Any) -> Balancer:
        """A live, balanced view of `service`: `balancer.request("GET", "/path")`.

        Options: strategy (round_robin, weighted, least_loaded, consistent_hash), selector, tags,
        zone, region, near=(lat, lon), attempts, per_try_timeout, retry_budget, panic_threshold.
        """
        return Balancer(self, service, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@_with_runner(_async)
class AsyncClient(Operations):
    """Asyncio SDK client. `async with AsyncClient() as c: await c.instances("llm")`."""

    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(addr, token, timeout)
        self._http = httpx.AsyncClient()

    async def watch(self, service: str, wait: float = 60.0, **query: Any) -> AsyncIterator[list[InstanceView]]:
        """Yield the matching instances now, then again each time they change (blocking queries)."""
        index = None
        while True:
            found, current = await self.instances_at(service, index=index, wait=wait, **query)  # type: ignore[misc]
            if current != index:
                yield found
            index = current

    async def balancer(self, service: str, **options: Any) -> AsyncBalancer:
        """A live, balanced view of `service`: `await balancer.request("GET", "/path")`."""
        return await AsyncBalancer(self, service, **options).start()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
