"""The outermost layer: counts and times every request, and answers cached reads itself.

A GET whose exact path and query have a current cached answer goes out straight from memory,
before routing or parsing: that is what makes a repeated catalog read cost about as much as
serving a static file. Everything else goes on to the Starlette application.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ..telemetry import LATENCY, REQUESTS
from .cache import ResponseCache


class Front:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labels() costs a lock and a hash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "GET":
            cache: ResponseCache | None = getattr(self.app.state, "cache", None)
            answer = cache.get((scope["path"], scope["query_string"])) if cache is not None else None
            if answer is not None:
                await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
                await send({"type": "http.response.body", "body": answer.body})
                answer.count.inc()
                answer.latency.observe(time.perf_counter() - started)
                return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], route, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    REQUESTS.labels(key[0], route, str(status)),
                    LATENCY.labels(key[0], route),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
