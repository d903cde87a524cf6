"""Following the registry: the catalog by blocking queries, each service by its change stream.

`RegistryClient` is the SDK's `AsyncClient` (the address, `SWARM_TOKEN` as a bearer token, its
timeouts and errors) with what a gateway needs beyond it: the catalog as a blocking query, and
change streams that raise when they end instead of resuming by themselves, so the follower can
say the view is stale. Change streams have their own connection pool: httpx's default of 100
connections would cap the services followed.

A `Follower` keeps one service's instances (all of them, `all=true`, so that panic mode and "known
but none healthy" can see the unhealthy ones) as the stream's snapshot, put and delete events
leave them, and calls back once per batch of events. When the stream fails it keeps what it had,
says why in `stale`, and reconnects with a backoff (0.5 s doubling to 5 s), resuming from the
last event's index; the catalog follower does the same with its blocking query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import msgspec

from ..errors import ApiError
from ..records import InstanceView, Left, ServiceSummary
from ..sdk.answers import raise_for_error, reader
from ..sdk.client import AsyncClient, Operation
from ..sdk.resume import EventParser, WatchEvent
from .looping import Looping

log = logging.getLogger("swarm.gateway")
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0  # a lost registry is found again within seconds
CATALOG_WAIT = 30.0
# The server sends a keep-alive comment every 15 s: a stream silent for longer is dead.
STREAM_SILENCE = 45.0
_read_catalog = reader(list[ServiceSummary])
_snapshot = msgspec.json.Decoder(list[InstanceView])
_put = msgspec.json.Decoder(InstanceView)
_delete = msgspec.json.Decoder(Left)
OPENED = WatchEvent("opened", 0, "")


def _catalog_at(response: httpx.Response) -> tuple[list[ServiceSummary], int]:
    return _read_catalog(response), int(response.headers.get("x-swarm-index", 0))


class RegistryClient(AsyncClient):
    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(addr, token, timeout)
        self._streams = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=8))

    async def catalog_at(self, index: int | None, wait: float) -> tuple[list[ServiceSummary], int]:
        """The catalog and its index; blocks up to `wait` while `index` is current."""
        params = {"index": index, "wait": f"{wait}s" if index is not None else None}
        request = self._request("GET", "/v1/services", params=params, timeout=wait + self.timeout)
        return await self._send(Operation(request, _catalog_at))

    async def changes(self, service: str, selector: str | None, since: int | None) -> AsyncIterator[WatchEvent]:
        """One service's change stream, every instance (`all=true`), from `since`; raises when it ends."""
        request = self._events(service, selector, True, since)
        request.extensions["timeout"] = httpx.Timeout(self.timeout, read=STREAM_SILENCE).as_dict()
        with self._translate_errors():
            response = await self._streams.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise_for_error(response)
            yield OPENED  # a resumed stream may send nothing until something changes
            parser = EventParser()
            with self._translate_errors():
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        finally:
            await response.aclose()
        raise self._stream_ended()

    async def aclose(self) -> None:
        await self._streams.aclose()
        await super().aclose()


class Backoff:
    """Why the view may be out of date, since when, and how long to wait before trying again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stale: str | None = "not read yet"
        self.since: float | None = time.time()
        self._failures = 0
        self._lost = False
        self._read = False  # a view to fall back on: none until the registry first answers

    def answered(self) -> None:
        if self._lost:
            log.warning("%s: the registry answers again", self.what)
        self.stale, self.since, self._failures, self._lost, self._read = None, None, 0, False, True

    def failed(self, error: Exception) -> float:
        expected = isinstance(error, ApiError | httpx.TransportError)
        why = str(error) or type(error).__name__
        if not self._lost:
            fallback = "serving the last view" if self._read else "nothing read yet, trying again"
            log.warning("%s: %s; %s", self.what, why, fallback, exc_info=None if expected else error)
            self._lost = True
        if self.stale is None or self.since is None:
            self.since = time.time()
        self.stale = why
        delay = min(BACKOFF_FIRST * 2.0**self._failures, BACKOFF_MAX)
        self._failures += 1
        return delay


class Follower(Looping):
    """One service's instances, as its change stream says, kept while the registry is away."""

    def __init__(
        self,
        client: RegistryClient,
        service: str,
        selector: str | None,
        changed: Callable[[Follower], None],
    ) -> None:
        self.client = client
        self.service = service
        self.selector = selector
        self.instances: dict[str, InstanceView] = {}
        self.index: int | None = None
        self.status = Backoff(f"following {service}")
        self.ready = asyncio.Event()  # the first snapshot has arrived
        self._changed = changed
        self._due = False

    async def _run(self) -> None:
        while True:
            try:
                async for event in self.client.changes(self.service, self.selector, self.index):
                    self._apply(event)
            except Exception as exc:  # whatever it was, the view must not silently stop moving
                await asyncio.sleep(self.status.failed(exc))

    def _apply(self, event: WatchEvent) -> None:
        if event is OPENED:
            if self.index is not None:  # resumed: what it had is current once the stream is open
                self.status.answered()
            return
        if event.event == "snapshot":
            self.instances = {i.id or "": i for i in _snapshot.decode(event.data)}
            self.status.answered()
            self.ready.set()
        elif event.event == "put":
            instance = _put.decode(event.data)
            self.instances[instance.id or ""] = instance
        elif event.event == "delete":
            self.instances.pop(_delete.decode(event.data).id, None)
        if event.index:
            self.index = event.index
        if not self._due:  # once for all the events that arrived together
            self._due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._due = False
        self._changed(self)


class CatalogFollower(Looping):
    """The registry's catalog: which services exist, followed with blocking queries."""

    def __init__(self, client: RegistryClient, changed: Callable[[set[str]], None]) -> None:
        self.client = client
        self.services: set[str] | None = None  # None until the first answer
        self.index: int | None = None
        self.status = Backoff("following the catalog")
        self.ready = asyncio.Event()
        self._changed = changed

    async def _run(self) -> None:
        while True:
            try:
                found, index = await self.client.catalog_at(
                    self.index if self.status.stale is None else None, CATALOG_WAIT
                )
            except Exception as exc:
                await asyncio.sleep(self.status.failed(exc))
                continue
            self.status.answered()
            self.index = index
            services = {s.name for s in found}
            if services != self.services:
                self.services = services
                self._changed(services)
            self.ready.set()
