"""The same application over granian's RSGI interface, which `swarm serve` uses.

RSGI hands a request over with far less Python work than ASGI's message dicts (granian with a
bare app: about 45,000 instructions a request against 73,000). Every request is served natively
here: a cached read straight from the cache, anything else as an `RsgiCall` through the same
`Front.answer` that the ASGI side uses, so the app itself stays a plain ASGI callable too.

A stream's parts go out no faster than its client takes them (`unsent.py`): granian's stream
transport would queue them in memory without bound. A client that leaves the stream's buffer full
for the client timeout has its stream ended; it resumes with Last-Event-ID.

With client certificates (`--tls-client-ca`) `RelayedApp` serves instead: its connections come
through the TLS relay (`tls.py`), which says for each who is at the other end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope

from ...core.core import Core
from .call import Call, Reply, collect, error_reply
from .front import Front
from .unsent import Unsent

if TYPE_CHECKING:
    from .tls import Peer, Relay


class RSGIApp:
    def __init__(self, front: Front, core: Core) -> None:
        self.front = front
        self.core = core

    # --- granian calls these with the serving loop, before serving and after -------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.core.start())
        self.front.attach(self.core)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.front.detach()
        loop.run_until_complete(self.core.stop())

    # --- requests ---------------------------------------------------------------------------

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return  # no websockets here
        front = self.front
        started = time.perf_counter()
        if scope.method == "GET":
            answer = front.cached(scope.path, scope.query_string, scope.headers.get)
            if answer is not None:
                proto.response_bytes(200, answer.headers, answer.body)
                answer.requests.observe(time.perf_counter() - started)
                return
        call = self.call(scope, proto)
        reply = await front.answer(call)
        try:
            if isinstance(reply, Reply):
                proto.response_bytes(reply.status, reply.headers, reply.body)
            else:
                limits = front.limits
                unsent = Unsent(scope.server, scope.client, limits.watch_buffer, limits.client_timeout)
                transport = proto.response_stream(reply.status, reply.headers)
                await call.until_gone(_pump(reply.parts, transport, unsent))
        finally:
            front.done(call, reply, started)

    def call(self, scope: Scope, proto: HTTPProtocol) -> RsgiCall:
        """The call for a request that is not a cached read."""
        return RsgiCall(scope, proto)


class RelayedApp(RSGIApp):
    """The app behind the TLS relay: a connection that did not come through it is refused, so that
    nobody gets past the client-certificate check by connecting to granian's loopback port."""

    def __init__(self, front: Front, core: Core, relay: Relay) -> None:
        super().__init__(front, core)
        self.relay = relay
        self._refusal = error_reply(403, "connect over TLS, with a client certificate, to the server's address")

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__rsgi_init__(loop)
        self.relay.start(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.relay.close())
        super().__rsgi_del__(loop)

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.client not in self.relay.peers:
            if scope.proto == "http":
                refusal = self._refusal
                proto.response_bytes(refusal.status, refusal.headers, refusal.body)
            return
        await super().__rsgi__(scope, proto)

    def call(self, scope: Scope, proto: HTTPProtocol) -> RsgiCall:
        return RsgiCall(scope, proto, self.relay.peers.get(scope.client))


class RsgiCall(Call):
    """A request over RSGI; `peer` says who is at the other end of a relayed TLS connection."""

    __slots__ = ("_headers", "_peer", "_proto", "_scope")

    def __init__(self, scope: Scope, proto: HTTPProtocol, peer: Peer | None = None) -> None:
        super().__init__(scope.method, scope.path, scope.query_string)
        self._scope = scope
        self._headers = scope.headers
        self._proto = proto
        self._peer = peer

    def header(self, name: str) -> str | None:
        return self._headers.get(name)  # type: ignore[no-any-return]

    @property
    def client(self) -> str:
        if self._peer is not None:
            return self._peer.address
        return self._scope.client.rpartition(":")[0].strip("[]")  # "10.0.0.1:5123", "[::1]:5123"

    @property
    def identity(self) -> str | None:
        return self._peer.identity if self._peer is not None else None

    def _read(self, length_known: bool) -> Awaitable[bytes]:
        # With a Content-Length (already checked against the limit) the body is exactly that long.
        return self._proto() if length_known else collect(self._proto)  # type: ignore[arg-type]

    async def gone(self) -> None:
        await self._proto.client_disconnect()


async def _pump(parts: AsyncIterator[bytes], transport: Any, unsent: Unsent) -> None:
    try:
        async for part in parts:
            size = len(part)
            if not unsent.fits(size) and not await unsent.room(size):
                return  # the client takes nothing: end the stream rather than queue more for it
            unsent.sent += size
            await transport.send_bytes(part)
    except ProtocolClosed:  # the client is gone: `until_gone` notices it too
        pass
