"""Keeping an instance's TTL checks alive in the background, from a thread or an asyncio task.

    with client.keep_alive("llm-inference", "llm-3", every=5, metrics=read_metrics):
        serve()

The first heartbeat is sent at once, and its error raised (a misspelt id or an unreachable
server shows at the start); after it, a failed heartbeat is logged once, tried again at the
next beat, and logged once more when beats work again. `metrics` is a mapping or a callable
returning one, called before every beat.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any, Protocol

from ..records import InstanceView


class Beating(Protocol):
    """What a keep-alive needs of a `Client`."""

    def heartbeat(self, service: str, id: str, metrics: dict[str, float] | None = None) -> InstanceView: ...


class AsyncBeating(Protocol):
    """What a keep-alive needs of an `AsyncClient`."""

    async def heartbeat(self, service: str, id: str, metrics: dict[str, float] | None = None) -> InstanceView: ...


log = logging.getLogger("swarm.sdk")
MetricsSource = Mapping[str, float] | Callable[[], Mapping[str, float]] | None


class Beats:
    """What both faces share: the service and id, the cadence, the metrics, and saying what went wrong."""

    def __init__(self, service: str, id: str, every: float, metrics: MetricsSource) -> None:
        if every <= 0:
            raise ValueError(f"every: must be positive, not {every!r}")
        self.service = service
        self.id = id
        self.every = every
        self._metrics = metrics
        self.error: Exception | None = None  # the last failure, until a beat succeeds again

    def metrics(self) -> dict[str, float] | None:
        source = self._metrics
        return dict(source() if callable(source) else source) if source is not None else None

    def failed(self, error: Exception) -> None:
        if self.error is None:
            log.warning(
                "heartbeat of %s/%s failed (%s); trying again every %g s", self.service, self.id, error, self.every
            )
        self.error = error

    def succeeded(self) -> None:
        if self.error is not None:
            log.warning("heartbeat of %s/%s works again", self.service, self.id)
        self.error = None


class KeepAlive:
    """Heartbeats from a daemon thread while the `with` block runs (or from `start()` to `close()`)."""

    def __init__(self, client: Beating, service: str, id: str, every: float, metrics: MetricsSource) -> None:
        self.beats = Beats(service, id, every, metrics)
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keep-alive {service}/{id}", daemon=True)

    def beat(self) -> InstanceView:
        """One heartbeat now."""
        return self._client.heartbeat(self.beats.service, self.beats.id, metrics=self.beats.metrics())

    def start(self) -> KeepAlive:
        """The first heartbeat, then the thread; once only."""
        if not self._thread.is_alive():
            self.beat()
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.beats.every):
            try:
                self.beat()
            except Exception as exc:  # whatever it was (a metrics callable's too), the next beat may work
                self.beats.failed(exc)
            else:
                self.beats.succeeded()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> KeepAlive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncKeepAlive:
    """Heartbeats from an asyncio task: `async with client.keep_alive(...)`, or `await` it and `aclose()`."""

    def __init__(self, client: AsyncBeating, service: str, id: str, every: float, metrics: MetricsSource) -> None:
        self.beats = Beats(service, id, every, metrics)
        self._client = client
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> InstanceView:
        """One heartbeat now."""
        return await self._client.heartbeat(self.beats.service, self.beats.id, metrics=self.beats.metrics())

    async def start(self) -> AsyncKeepAlive:
        """The first heartbeat, then the task; once only."""
        if self._task is None:
            await self.beat()
            self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.beats.every)
            try:
                await self.beat()
            except Exception as exc:  # whatever it was (cancellation is not an Exception), keep beating
                self.beats.failed(exc)
            else:
                self.beats.succeeded()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __await__(self) -> Generator[Any, None, AsyncKeepAlive]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncKeepAlive:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
