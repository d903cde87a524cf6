"""The outermost layer: answers cached reads, dispatches everything else, counts and times it all.

A GET whose exact path and query have a current cached answer goes out straight from memory,
before routing or parsing: that is what makes a repeated catalog read cost about as much as
serving a static file. Other requests find their endpoint in the `RouteTable` and get Starlette
`Request` and `Response` objects; errors become `{"error": ...}` answers here. The Starlette
application behind holds the state and runs the lifespan (the registry's start and stop).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import SwarmError
from ..records import ErrorBody
from ..telemetry import REQUESTS
from .cache import Answer, ResponseCache
from .dispatch import Found, RouteTable

log = logging.getLogger("swarm")
_encode = msgspec.json.Encoder().encode


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(ErrorBody(error=message)), status_code, headers, media_type="application/json")


class Front:
    def __init__(self, app: Any, routes: RouteTable) -> None:
        self.app = app
        self.routes = routes

    def cached(self, path: str, query: bytes) -> Answer | None:
        """The current cached answer to GET path?query, if there is one."""
        cache: ResponseCache | None = getattr(self.app.state, "cache", None)
        return cache.get((path, query)) if cache is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        if method == "GET":
            answer = self.cached(scope["path"], scope["query_string"])
            if answer is not None:
                await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
                await send({"type": "http.response.body", "body": answer.body})
                answer.requests.observe(time.perf_counter() - started)
                return
        found = self.routes.find(method, scope["path"])
        route = "unmatched"
        if isinstance(found, Found):
            route = found.endpoint.path
            scope["app"] = self.app
            scope["route"] = found.endpoint
            scope["path_params"] = found.params
            request = Request(scope, receive)
            try:
                response = await found.endpoint.handler(request)
            except SwarmError as exc:
                response = error_response(exc.status_code, exc.message)
            except Exception:
                log.exception("unexpected error on %s %s", method, scope["path"])
                response = error_response(500, "internal error; see the server log")
        elif found is None:
            response = error_response(404, f"no such path: {scope['path']}")
        else:
            message = f"method {method} not allowed here (allowed: {', '.join(found.allowed)})"
            response = error_response(405, message, {"Allow": ", ".join(found.allowed)})
        try:
            await response(scope, receive, send)
        finally:
            REQUESTS.series(method, route, response.status_code).observe(time.perf_counter() - started)
