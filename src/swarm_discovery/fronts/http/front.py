"""The outermost layer: answers cached reads, dispatches everything else, counts and times it all.

A GET whose exact path and query have a current cached answer goes out straight from memory,
before routing or parsing: that is what makes a repeated catalog read cost about as much as
serving a static file. Other requests find their endpoint in the `RouteTable`; errors become
`{"error": ...}` answers here. `Front` is itself the ASGI application (`api/rsgi.py` serves the
same `Front` over RSGI). It answers 503 until a running core is attached.

Requests are counted by method, route and status code, each from a fixed set, so that no client
can grow /metrics: methods the route table does not know count as "OTHER", paths it does not
know as "unmatched".
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from ... import __version__
from ...acl import EVERYONE
from ...core.core import Core
from ...errors import BadRequest, PayloadTooLarge, SwarmError, TooBusy, Unauthorized
from ...telemetry import REQUESTS
from .cache import Answer
from .call import Call, Reply, Stream, collect, error_reply, secret_in
from .context import Context
from .dispatch import Found, RouteTable
from .headers import Headers, asgi_headers
from .limits import Limits
from .rates import Rates
from .routes import Access, openapi_document

log = logging.getLogger("swarm")


class Front:
    def __init__(
        self, app: Any, routes: RouteTable, limits: Limits, unknown: Callable[[str, str], str | None] | None = None
    ) -> None:
        self.app = app  # what serves ASGI events other than HTTP (the lifespan), if anything
        self.routes = routes
        self.limits = limits
        self.unknown = unknown  # a better 404 message for a path of another API's family, if it has one
        self.writes = Rates(limits.write_rate)  # requests other than GET, per caller
        self.context: Context | None = None  # while a running core is attached

    def attach(self, core: Core) -> None:
        self.context = Context(core, openapi_document(__version__), self.limits)
        log.info(
            "swarm %s ready: %s store at %s, index %d",
            __version__,
            core.store.name,
            core.store.location,
            core.registry.index,
        )

    def detach(self) -> None:
        self.context = None

    def cached(self, path: str, query: str, header: Callable[[str], str | None]) -> Answer | None:
        """The current cached answer to GET path?query for the caller the headers name, if there is one.

        With ACLs on, the raw spelling is aliased per caller, and only after that caller was
        allowed the read (`reads.py`): a token's rules never change, so it stays allowed.
        """
        context = self.context
        if context is None:
            return None
        if not context.acl.enabled:
            return context.cache.get_raw((path, query))
        try:
            caller = context.acl.known_caller(secret_in(header))
        except Unauthorized:
            return None  # the slow path answers the 401
        return context.cache.get_raw((path, query, caller.key)) if caller is not None else None

    async def answer(self, call: Call) -> Reply | Stream:
        """Route the call to its endpoint and run it; any error becomes an `{"error"}` reply."""
        if self.context is None:
            return error_reply(503, "the server is starting or stopping")
        call.context = self.context
        found = self.routes.find(call.method, call.path)
        if isinstance(found, Found):
            call.route = found.endpoint.path
            call.params = found.params
            try:
                if call.context.acl.enabled:
                    self._admit(call, found.endpoint.access)
                else:
                    call.caller = EVERYONE  # who every call is without ACLs: nothing to check
                if call.method != "GET":
                    self.writes.take(call.principal)  # TooBusy: nothing of it is read or done
                return await found.endpoint.handler(call)  # type: ignore[no-any-return]
            except PayloadTooLarge as exc:
                # The rest of the body is never read, so the connection cannot carry another request.
                return error_reply(exc.status_code, exc.message, [("connection", "close")])
            except SwarmError as exc:
                return error_reply(exc.status_code, exc.message, _headers_for(exc))
            except Exception:
                log.exception("unexpected error on %s %s", call.method, call.path)
                return error_reply(500, "internal error; see the server log")
        if found is None:
            message = self.unknown(call.method, call.path) if self.unknown is not None else None
            return error_reply(404, message or f"no such path: {call.path}")
        allowed = ", ".join(found.allowed)
        return error_reply(405, f"method {call.method} not allowed here (allowed: {allowed})", [("allow", allowed)])

    def _admit(self, call: Call, access: Access | None) -> None:
        """With ACLs on: who the call comes from, and whether the route allows it; 401 or 403 before any work."""
        acl = call.context.acl
        call.caller = acl.caller(call.secret(), call.identity)
        if access is None:
            return
        if access.param is None:
            if access.section == "operator":
                acl.require(call.caller, "operator", "", access.level)
            else:
                acl.require_any(call.caller, access.section)
            return
        name = call.params.get(access.param) or call.query_params.get(access.param) or ""
        acl.require(call.caller, access.section, name, access.level)

    def done(self, call: Call, reply: Reply | Stream, started: float) -> None:
        """The call is over: count it, and free the long-read slot a stream held."""
        method = call.method if call.method in self.routes.methods else "OTHER"
        REQUESTS.series(method, call.route, reply.status).observe(time.perf_counter() - started)
        if isinstance(reply, Stream):
            reply.slot.release()

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        query = scope["query_string"].decode("latin-1")
        if scope["method"] == "GET":
            answer = self.cached(scope["path"], query, functools.partial(_header, scope))
            if answer is not None:
                await send({"type": "http.response.start", "status": 200, "headers": answer.asgi_headers})
                await send({"type": "http.response.body", "body": answer.body})
                answer.requests.observe(time.perf_counter() - started)
                return
        call = AsgiCall(scope, receive, query)
        reply = await self.answer(call)
        try:
            await _send(call, reply, send)
        finally:
            self.done(call, reply, started)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope["headers"]:  # ASGI names are lower case
        if key == wanted:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def _headers_for(error: SwarmError) -> Headers:
    if isinstance(error, TooBusy):
        return [("retry-after", str(error.retry_after))]
    if isinstance(error, PayloadTooLarge):
        return [("connection", "close")]  # the rest of the body is never read: the connection is done
    if isinstance(error, Unauthorized):
        return [("www-authenticate", 'Bearer realm="swarm"')]
    return []


class AsgiCall(Call):
    __slots__ = ("_receive", "_scope")

    def __init__(self, scope: Scope, receive: Receive, query: str) -> None:
        super().__init__(scope["method"], scope["path"], query)
        self._scope = scope
        self._receive = receive

    def header(self, name: str) -> str | None:
        return _header(self._scope, name)

    @property
    def client(self) -> str:
        client = self._scope.get("client")  # ASGI leaves it out when the server does not know it
        return str(client[0]) if client else ""

    @property
    def identity(self) -> str | None:
        # The ASGI TLS extension, from servers that give it; only on TLS connections.
        tls = (self._scope.get("extensions") or {}).get("tls")
        if tls is None:
            return None
        from .tls import identity_from_asgi  # cryptography, loaded only where a certificate may be

        return identity_from_asgi(tls)

    def _read(self, length_known: bool) -> Awaitable[bytes]:
        return collect(self._chunks())

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("body: the client went away before sending it")
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def gone(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


async def _send(call: Call, reply: Reply | Stream, send: Send) -> None:
    whole = reply.body if isinstance(reply, Reply) else None
    await send({"type": "http.response.start", "status": reply.status, "headers": asgi_headers(reply.headers, whole)})
    if isinstance(reply, Reply):
        await send({"type": "http.response.body", "body": reply.body})
        return
    stream = reply.parts

    async def pump() -> None:
        async for part in stream:
            await send({"type": "http.response.body", "body": part, "more_body": True})

    try:
        await call.until_gone(pump())
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:  # what ASGI servers raise on sending to a client that is gone
        pass
