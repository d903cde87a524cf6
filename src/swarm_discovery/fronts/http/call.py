"""A request as the handlers see it, and what they answer, whichever server interface carried it.

`swarm serve` runs over granian's RSGI (`api/rsgi.py`); any ASGI server runs `Front` itself
(`api/front.py`). Each builds its own kind of `Call` and sends the `Reply` or `Stream` back in its
own terms, so a request is never translated from one interface into the other: doing that for
RSGI, through Starlette's Request and Response, cost a quarter of a registration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from starlette.datastructures import QueryParams

from ...acl import Caller, secret_from
from ...errors import PayloadTooLarge
from ...records import ErrorBody
from .headers import JSON, Headers, json_headers

if TYPE_CHECKING:
    from .context import Context
    from .limits import Slot

MAX_BODY = 64 * 1024

_encode = msgspec.json.Encoder().encode


def too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"body: larger than the {MAX_BODY // 1024} KiB limit")


def secret_in(header: Callable[[str], str | None]) -> str | None:
    """The token a request's headers present: `Authorization: Bearer`, `X-Swarm-Token` or `X-Consul-Token`."""
    return secret_from(header("authorization"), header("x-swarm-token") or header("x-consul-token"))


class Call:
    """One request: method, path, query, the route's path parameters, headers and body.

    `Front` hands it the `context` (registry, response cache) when it routes it.
    """

    __slots__ = ("_query", "caller", "context", "method", "params", "path", "query_string", "route")
    context: Context
    caller: Caller  # who it comes from, once `Front` has checked its token

    def __init__(self, method: str, path: str, query_string: str) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.params: dict[str, str] = {}
        self.route = "unmatched"  # the endpoint's path template once routed: a metrics label
        self._query: QueryParams | None = None

    @property
    def query_params(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.query_string)
        return self._query

    def header(self, name: str) -> str | None:
        """The value of a header, by its lower-case name."""
        raise NotImplementedError

    @property
    def client(self) -> str:
        """The client's address (no port): what the per-client caps count by."""
        raise NotImplementedError

    @property
    def identity(self) -> str | None:
        """Who the client's verified certificate names (`tls.identity`: its first DNS, URI or email
        alternative name, else its common name); None without a verified client certificate."""
        raise NotImplementedError

    @property
    def principal(self) -> str:
        """Who the call counts as, for write rates and reports: its token's id, else its address."""
        return self.caller.id or self.client

    def secret(self) -> str | None:
        """The token the request presents, if any (`Authorization: Bearer`, `X-Swarm-Token`, `X-Consul-Token`)."""
        return secret_in(self.header)

    def body(self) -> Awaitable[bytes]:
        """The whole body; 413 past MAX_BODY, before reading any of it when Content-Length says so.

        Not a coroutine of its own: the read it hands back is awaited once, by the caller."""
        declared = self.header("content-length")
        known = declared is not None and declared.isdigit()
        if known and int(declared) > MAX_BODY:  # type: ignore[arg-type]
            raise too_large()
        return self._read(known)

    def _read(self, length_known: bool) -> Awaitable[bytes]:
        """The body; without a known length, refused with `too_large()` once past MAX_BODY."""
        raise NotImplementedError

    async def gone(self) -> None:
        """Return once the client has gone away."""
        raise NotImplementedError

    async def until_gone(self, work: Awaitable[None]) -> None:
        """Await `work`, but give it up at once if the client goes away first."""
        tasks = [asyncio.ensure_future(work), asyncio.ensure_future(self.gone())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        if tasks[0] in done:
            tasks[0].result()


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    """A body that arrives in chunks, refused as soon as it grows past MAX_BODY."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        parts.append(chunk)
    return b"".join(parts)


class Reply:
    """A whole answer: status, headers (with Content-Type; servers add Content-Length) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int = 200, headers: Headers | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers if headers is not None else [("content-type", JSON)]


class Stream:
    """An answer sent in parts as they come (Server-Sent Events), until they end or the client goes.

    `slot` is the long-read slot it holds; the server releases it when the stream is over.
    """

    __slots__ = ("headers", "parts", "slot", "status")

    def __init__(self, parts: AsyncIterator[bytes], headers: Headers, slot: Slot, status: int = 200) -> None:
        self.parts = parts
        self.headers = headers
        self.slot = slot
        self.status = status


def json_reply(body: bytes, index: int, status: int = 200) -> Reply:
    """Encoded JSON with the change index it is current at."""
    return Reply(body, status, json_headers(index))


def error_reply(status: int, message: str, headers: Headers = []) -> Reply:  # noqa: B006 - never mutated
    return Reply(_encode(ErrorBody(error=message)), status, [("content-type", JSON), *headers])
