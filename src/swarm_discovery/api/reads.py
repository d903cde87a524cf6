"""Reads: blocking queries, the X-Swarm-Index header, and a cache of encoded answers.

An answer is cached under its path and query (less `index` and `wait`) together with the index of
the topic it covers; it is served again until that topic moves. Reads never touch the store.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..registry import Registry
from ..telemetry import WATCHERS
from .inputs import integer, wait_seconds

CACHE_SIZE = 4096


class ResponseCache:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def get(self, key: str, index: int) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] != index:
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: str, index: int, body: bytes) -> None:
        self._entries[key] = (index, body)
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


async def until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_unless_gone(request: Request, waiting: Awaitable[None]) -> None:
    """Await `waiting`, but give up at once if the client goes away."""
    tasks = [asyncio.ensure_future(waiting), asyncio.ensure_future(until_disconnect(request))]
    WATCHERS.inc()
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        WATCHERS.dec()
        for task in tasks:
            task.cancel()


def registry_of(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


def json_response(body: bytes, index: int, status_code: int = 200) -> Response:
    return Response(body, status_code, {"X-Swarm-Index": str(index)}, "application/json")


async def read(request: Request, topic: str, render: Callable[[], bytes]) -> Response:
    """Answer a read of `topic`, blocking first when the query carries `index`."""
    registry = registry_of(request)
    cache: ResponseCache = request.app.state.cache
    wait = wait_seconds(request)
    index = integer(request, "index", minimum=0)
    if index is not None:
        await wait_unless_gone(request, registry.wait(topic, index, wait))
    current = registry.topic_index(topic)
    query = "&".join(sorted(f"{k}={v}" for k, v in request.query_params.multi_items() if k not in ("index", "wait")))
    key = f"{request.url.path}?{query}"
    body = cache.get(key, current)
    if body is None:
        body = render()
        cache.put(key, current, body)
    return json_response(body, current)


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
