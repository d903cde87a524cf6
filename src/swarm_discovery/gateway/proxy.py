"""Passing one request on: the balancer's attempts driven over `upstream.py`, the answer relayed.

The backend's `BalancerCore` yields where each attempt goes and hears how it went, exactly as
the SDK's balancer drives it. An attempt that fails before any byte of its answer reached the
client (no connection, a reset, no head within the route's `timeout`, a 502, 503 or 504) is
tried on another instance, if the balancer's retry plan and budget allow: every request whose
bytes never reached an instance, idempotent requests always, any request on routes with
`retry = "all"`, and never one whose body was streamed (it cannot be sent again). Before relaying,
a small answer is read whole and a streamed one up to its first part (model servers send a
stream's head at once and its first token after the prefill), so a failure until then can still
be retried. Once relaying has begun nothing is retried: an answer whose body breaks off is cut
off for the client too (the connection closes without the end of the body, so the client can tell).

Bodies stream both ways: request bodies of known length up to BUFFERED are read first (so that
a retry can send them again), others are passed on as they arrive, under the route's
`body_limit`. Answers of known length up to SMALL_ANSWER are sent in one piece; every other
answer, a token stream among them, is passed on part by part as it arrives, at the pace the
client takes it. A client that goes away cancels its request upstream: its connection to the
instance is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator

from ..balance import Endpoint, Outcome
from .backend import RETRY_STATUSES, Backend
from .errors import GatewayError
from .front import Body as Stream
from .front import Request, date_line
from .metrics import GatewayMetrics
from .settings import Route
from .upstream import Connection, UpstreamError, Upstreams
from .wire import BadResponse, Head, remember, request_head

BUFFERED = 1 << 20
SMALL_ANSWER = 64 * 1024
Flow = Generator[Endpoint, Outcome, None]


class Body:
    """A request's body: read whole (`data`, which a retry can send again) or still to stream."""

    __slots__ = ("data", "length", "stream", "taken")

    def __init__(self, data: bytes | None = None, stream: Stream | None = None, length: int | None = None):
        self.data = data
        self.stream = stream
        self.length = length  # as the client declared it; None: chunked
        self.taken = False  # some of a streamed body has been sent: it cannot be sent again

    def framing(self, method: str) -> bytes:
        if self.data is not None:
            return (
                b"Content-Length: %d\r\n" % len(self.data) if self.data or method in ("POST", "PUT", "PATCH") else b""
            )
        if self.stream is None:
            return b""
        return b"Content-Length: %d\r\n" % self.length if self.length is not None else b"Transfer-Encoding: chunked\r\n"


async def read_body(request: Request, limit: int, whole: bool = False) -> Body:
    """The request's body: read first if its length is known and at most BUFFERED (or if `whole`),
    else left to stream; 413 past `limit`, before reading any of it when the length says so."""
    length = request.content_length
    if length is not None and length > limit:
        raise GatewayError(413, "too_large", f"body: larger than this route's limit of {limit} bytes")
    stream = request.body
    if stream is None:
        return Body(data=b"" if length == 0 or whole else None)
    if (request.header(b"expect") or "").lower() == "100-continue":
        request.continue_()  # the client waits for it to send the body
    if length is not None and (length <= BUFFERED or whole):
        return Body(data=await stream.whole(), length=length)
    if not whole:
        return Body(stream=stream, length=length)
    parts, size = [], 0
    async for part in stream:
        size += len(part)
        if size > limit:
            raise GatewayError(413, "too_large", f"body: larger than this route's limit of {limit} bytes")
        parts.append(part)
    return Body(data=b"".join(parts), length=size)


_FORWARDED: dict[tuple[str | None, str, str | None], bytes] = {}


def _forwarded(request: Request) -> bytes:
    """The forwarding fields for `request`; a client sends the same ones over and over: kept, as
    `wire` keeps heads."""
    key = (request.header(b"x-forwarded-for"), request.remote, request.header(b"host"))
    found = _FORWARDED.get(key)
    if found is not None:
        return found
    prior, remote, host = key
    lines = (
        f"X-Forwarded-For: {f'{prior}, {remote}' if prior else remote}\r\nX-Forwarded-Proto: http\r\n"
        + (f"X-Forwarded-Host: {host}\r\n" if host else "")
    ).encode("latin-1")
    remember(_FORWARDED, key, lines)
    return lines


def _where(backend: Backend, endpoint: Endpoint) -> str:
    return f"{backend.instance_id(endpoint.id)} at {endpoint.address}:{endpoint.port}"


class Proxy:
    def __init__(self, upstreams: Upstreams, metrics: GatewayMetrics) -> None:
        self.upstreams = upstreams
        self.metrics = metrics

    async def forward(self, request: Request, backend: Backend, target: str, body: Body, key: str | None) -> None:
        """Send to the backend's picks until one answers; `NoInstance` if none can be picked."""
        started = time.perf_counter()
        route = backend.route
        flow = backend.core.attempts_for(request.method, key, True if route.retry == "all" else None)
        extra = [_forwarded(request), body.framing(request.method)]
        tried: list[str] = []
        timeouts = 0
        try:
            endpoint = next(flow)
            while True:
                attempt_started = time.perf_counter()
                authority = f"{endpoint.address}:{endpoint.port}"
                head_bytes = request_head(request.method, target, authority, request.fields, extra)
                try:
                    conn, head, deadline = await self._exchange(endpoint, request.method, head_bytes, body, backend)
                    retry_due = head.status in RETRY_STATUSES and not body.taken
                    whole, first = (None, None) if retry_due else await self._begin(conn, head, deadline, route)
                except (UpstreamError, BadResponse) as exc:
                    failure = exc if isinstance(exc, UpstreamError) else UpstreamError(f"sent {exc}")
                    tried.append(f"{_where(backend, endpoint)}: {failure}")
                    timeouts += failure.timeout
                    outcome = Outcome(
                        refused=failure.refused,
                        latency=time.perf_counter() - attempt_started,
                        sent=failure.sent,
                        final=body.taken,
                    )
                    try:
                        endpoint = flow.send(outcome)
                    except StopIteration:
                        self._given_up(backend, endpoint, tried, timeouts, started)
                    continue
                ttfb = time.perf_counter() - attempt_started
                if retry_due:
                    try:
                        retry_on = flow.send(Outcome(status=head.status, latency=ttfb))
                    except StopIteration:  # no retry due: this answer is the one the client gets
                        answer = Answer(conn, head, *await self._begin(conn, head, deadline, route))
                        await self._relay(request, answer, backend, endpoint, None, started, ttfb)
                        return
                    tried.append(f"{_where(backend, endpoint)}: answered {head.status}")
                    conn.close()
                    endpoint = retry_on
                    continue
                answer = Answer(conn, head, whole, first)
                await self._relay(request, answer, backend, endpoint, flow, started, ttfb)
                return
        finally:
            flow.close()  # a request given up halfway (the client left) releases its pick
            backend.admission.wake()

    def _given_up(self, backend: Backend, endpoint: Endpoint, tried: list[str], timeouts: int, started: float) -> None:
        timed_out = timeouts == len(tried)
        status = 504 if timed_out else 502
        self.metrics.observe(
            backend.label, backend.instance_id(endpoint.id), status, time.perf_counter() - started, None
        )
        raise GatewayError(
            status,
            "upstream_timeout" if timed_out else "upstream_failed",
            f"no instance of {backend.label!r} answered: {'; '.join(tried)}",
            instance=backend.instance_id(endpoint.id),
        )

    async def _exchange(
        self, endpoint: Endpoint, method: str, head: bytes, body: Body, backend: Backend
    ) -> tuple[Connection, Head, float]:
        """Send the request on a pooled connection and wait for the answer's head; and the try's deadline."""
        route = backend.route
        fresh = False
        while True:
            conn = (None if fresh else self.upstreams.pooled(endpoint.address, endpoint.port)) or (
                await self.upstreams.connect(endpoint.address, endpoint.port, route.connect_timeout, fresh=True)
            )
            try:
                conn.write(head)
                if body.data:
                    conn.write(body.data)
                elif body.stream is not None:
                    await self._stream(conn, body, route.body_limit)
                deadline = asyncio.get_running_loop().time() + route.timeout
                return conn, await conn.head(deadline, bodiless=method == "HEAD"), deadline
            except UpstreamError as exc:
                conn.close()
                if exc.stale and not fresh and not body.taken:
                    fresh = True  # the instance had closed the idle connection: once more on a new one
                    continue
                raise
            except BaseException:
                conn.close()
                raise

    @staticmethod
    async def _stream(conn: Connection, body: Body, limit: int) -> None:
        assert body.stream is not None
        body.taken = True
        chunked = body.length is None
        sent = 0
        async for data in body.stream:
            sent += len(data)
            if sent > limit:
                raise GatewayError(413, "too_large", f"body: larger than this route's limit of {limit} bytes")
            conn.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")

    @staticmethod
    async def _begin(conn: Connection, head: Head, deadline: float, route: Route) -> tuple[bytes | None, bytes | None]:
        """What is read before anything reaches the client, so that a failure can still be retried:
        a small answer whole, or a streamed answer's first part (a token stream's first token; an
        instance may send the head of a stream long before). A streamed answer with nothing by the
        try's deadline is relayed as it is, its body to follow."""
        try:
            if head.length is not None and head.length <= SMALL_ANSWER:
                whole = conn.body_ready()
                if whole is None:
                    whole = b"".join([part async for part in _parts(conn, route.idle_timeout)])
                return whole, None
            try:
                return None, await conn.read(deadline)
            except UpstreamError as exc:
                if not exc.timeout:
                    raise
                return None, None
        except BaseException:
            conn.close()
            raise

    async def _relay(
        self,
        request: Request,
        answer: Answer,
        backend: Backend,
        endpoint: Endpoint,
        flow: Flow | None,
        started: float,
        ttfb: float,
    ) -> None:
        """Pass the answer on; then tell the balancer how it went (if `flow` still waits to hear)."""
        conn, head = answer.conn, answer.head
        instance = backend.instance_id(endpoint.id)
        lines = b"%sX-Swarm-Instance: %s\r\n%s" % (
            head.lines,
            instance.encode("latin-1"),
            b"" if head.dated else date_line(),
        )
        status: int | None = head.status
        try:
            if answer.whole is not None:
                request.respond(head.status, head.reason, lines, answer.whole)
            else:
                await request.start(head.status, head.reason, lines, head.length)
                if answer.first:
                    await request.write(answer.first)
                async for part in _parts(conn, backend.route.idle_timeout):
                    await request.write(part)
                request.finish()
            self.upstreams.release(conn)
        except (UpstreamError, BadResponse):
            status = None  # broke off: a failure of the instance's
            conn.close()
            request.cut_off()  # the client sees the answer cut off, not a complete one
        except BaseException:  # the client went away: nothing seen of the instance
            conn.close()
            raise
        if flow is not None:
            try:  # noqa: SIM105 (contextlib.suppress would be a context manager a request)
                flow.send(Outcome(status=status, latency=ttfb, final=True))
            except StopIteration:
                pass
        self.metrics.observe(backend.label, instance, head.status, time.perf_counter() - started, ttfb)


class Answer:
    """An answer's head and what was read of its body before relaying began."""

    __slots__ = ("conn", "first", "head", "whole")

    def __init__(self, conn: Connection, head: Head, whole: bytes | None, first: bytes | None) -> None:
        self.conn = conn
        self.head = head
        self.whole = whole  # all of a small body
        self.first = first  # the first part of a streamed body, if it came within the try's deadline


async def _parts(conn: Connection, idle: float) -> AsyncIterator[bytes]:
    """The body as it arrives, each part within `idle` seconds of the one before."""
    loop = asyncio.get_running_loop()
    while part := await conn.read(loop.time() + idle):
        yield part
