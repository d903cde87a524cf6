"""Reads: blocking queries, the X-Swarm-Index header, and the cache of encoded answers.

Reads never touch the store. A blocking query's answer is cached under its query less `index`
and `wait`, so that many watchers woken by one change share one encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ..registry import Registry
from ..telemetry import WATCHERS
from .cache import Answer, ResponseCache, json_headers
from .inputs import integer, wait_seconds


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


class IndexedJSON(Response):
    """JSON bytes already encoded, with X-Swarm-Index; headers built directly (Response's own
    header handling was a tenth of a registration's cost)."""

    media_type = "application/json"

    def __init__(self, body: bytes, index: int, status_code: int = 200) -> None:
        self.body = body
        self.status_code = status_code
        self.background = None
        self.raw_headers = json_headers(body, index)


async def read(request: Request, topic: str, render: Callable[[], bytes]) -> Response:
    """Answer a read of `topic`, blocking first when the query carries `index`."""
    registry = registry_of(request)
    cache: ResponseCache = request.app.state.cache
    wait = wait_seconds(request)
    index = integer(request, "index", minimum=0)
    if index is not None:
        await wait_unless_gone(request, registry.wait(topic, index, wait))
    if index is None:
        query = request.scope["query_string"]
    else:
        query = urlencode([kv for kv in request.query_params.multi_items() if kv[0] not in ("index", "wait")]).encode()
    key = (request.url.path, query)
    answer = cache.get(key)
    if answer is None:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        answer = Answer(topic, registry.topic_index(topic), render(), route)
        cache.put(key, answer)
    return IndexedJSON(answer.body, answer.index)


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
