"""The gateway's HTTP/1.1 server for clients: an asyncio protocol, requests parsed by httptools (llhttp).

Rather than aiohttp's server, which built a multidict of the fields, a request, a response and a
payload writer for every request (about a third of the gateway's CPU per proxied request): here
a handler gets the client's fields as they came, as a tuple (which `wire.request_head` caches
on), and an answer's head goes out in one write. llhttp parses strictly (RFC 9112): a bad request
line, bad framing (a Content-Length beside chunked, two Content-Lengths), a bad chunk is a 400.

Everything a client sends is bounded, each past its limit a JSON error, then the connection is
closed: a request target past MAX_TARGET is a 414; a field past MAX_FIELD, a head past MAX_HEAD
or MAX_FIELDS fields a 431; a head not whole within `head_timeout` seconds of its first byte a
408. A request body is read at the handler's pace: reading stops while HIGH_WATER bytes of it
wait; a body that stops arriving while the handler waits for it is dropped, connection and all,
after `keepalive` seconds of nothing. Requests pipelined behind one being answered wait their
turn, and reading stops meanwhile (past MAX_PIPELINED waiting, in one read, the next is a 429).
A client that goes away cancels its handler (and with it the upstream request); a connection
with no request for `keepalive` seconds after its last answer is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools
import msgspec

MAX_TARGET = 32 * 1024
MAX_FIELD = 32 * 1024  # one header field, name and value
MAX_HEAD = 64 * 1024
MAX_FIELDS = 128
MAX_PIPELINED = 64
HIGH_WATER = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
BODILESS = frozenset({204, 304})
_log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class Refused(Exception):
    """What the client sent cannot be answered: `status` and why, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Response:
    """A whole answer of the gateway's own: status, fields (without framing) and body."""

    __slots__ = ("body", "fields", "status")

    def __init__(self, status: int, body: bytes, fields: list[tuple[str, str]]) -> None:
        self.status = status
        self.body = body
        self.fields = fields


class Body:
    """A request's body as it arrives, taken part by part (at most HIGH_WATER bytes wait)."""

    __slots__ = ("_conn", "_error", "_parts", "_size", "_waiter", "done")

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Refused | None = None
        self.done = False  # all of it has arrived

    def _feed(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.reading()
        self._wake()

    def _end(self) -> None:
        self.done = True
        self._wake()

    def _fail(self, error: Refused) -> None:
        """What follows of the body cannot be read (its chunks are malformed): `read` raises `error`."""
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def waiting(self) -> int:
        return self._size

    async def read(self) -> bytes:
        """What has arrived since the last read, once something has; b"" once all of it is read."""
        while not self._parts:
            if self.done:
                return b""
            if self._error is not None:
                raise self._error
            if self._conn.lost:
                raise ConnectionResetError("the client closed the connection")
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._conn.reading()
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    async def whole(self) -> bytes:
        return b"".join([part async for part in self])


class Request:
    """One request: its line and fields as sent, its body (if it has one), and how to answer it."""

    __slots__ = (
        "_chunked_out",
        "_conn",
        "_sent",
        "body",
        "chunked",
        "content_length",
        "fields",
        "keep_alive",
        "method",
        "named",
        "target",
        "version",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: str,
        target: str,
        version: str,
        fields: tuple[tuple[bytes, bytes], ...],
        named: dict[bytes, bytes],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target  # as sent: path and query, undecoded
        self.version = version
        self.fields = fields  # (name, value) as sent, in order
        self.named = named  # the first value of each, by its name in lower case
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.body = Body(conn) if chunked or content_length else None
        self._sent = 0  # 1: the head is out, 2: the whole answer
        self._chunked_out = False

    @property
    def remote(self) -> str:
        return self._conn.peer

    def header(self, name: bytes) -> str | None:
        """The first field named `name` (lower case), if any."""
        value = self.named.get(name)
        return value.decode("latin-1") if value is not None else None

    def continue_(self) -> None:
        """Tell a client that sent `Expect: 100-continue` to send its body."""
        self._conn.write(CONTINUE)

    def respond(self, status: int, reason: str, lines: bytes, body: bytes) -> None:
        """The whole answer at once; `lines`: its fields, each line ending in CRLF, without framing."""
        bodiless = self.method == "HEAD" or status in BODILESS or status < 200
        framing = b"" if bodiless else b"Content-Length: %d\r\n" % len(body)
        self._conn.write(self._head(status, reason, lines, framing) + (b"" if bodiless else body))
        self._sent = 2

    def send(self, response: Response) -> None:
        lines = "".join([f"{k}: {v}\r\n" for k, v in response.fields]).encode("latin-1") + date_line()
        self.respond(response.status, _REASONS.get(response.status, ""), lines, response.body)

    async def start(self, status: int, reason: str, lines: bytes, length: int | None) -> None:
        """The head of an answer whose body follows in `write`s (chunked when `length` is None)."""
        if self.method == "HEAD" or status in BODILESS or status < 200:
            framing = b""
        elif length is not None:
            framing = b"Content-Length: %d\r\n" % length
        elif self.version == "1.1":
            framing = b"Transfer-Encoding: chunked\r\n"
        else:  # an HTTP/1.0 client: the body ends when the connection does
            self.keep_alive = False
            framing = b""
        self._chunked_out = framing.startswith(b"T")
        self._conn.write(self._head(status, reason, lines, framing))
        self._sent = 1
        await self._conn.drain()

    async def write(self, data: bytes) -> None:
        """More of the body begun with `start`, at the pace the client takes it."""
        if data:
            self._conn.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked_out else data)
            await self._conn.drain()

    def finish(self) -> None:
        if self._chunked_out:
            self._conn.write(b"0\r\n\r\n")
        self._sent = 2

    def cut_off(self) -> None:
        """End the connection without the end of the answer: the client sees it break off."""
        self._conn.abort()

    def _head(self, status: int, reason: str, lines: bytes, framing: bytes) -> bytes:
        if not self.keep_alive:
            framing += b"Connection: close\r\n"
        elif self.version == "1.0":
            framing += b"Connection: keep-alive\r\n"
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, reason.encode("latin-1"), lines, framing)


Handler = Callable[[Request], Awaitable[Response | None]]


class ClientConnection(asyncio.Protocol):
    """One client's connection: requests parsed as they arrive, answered one at a time in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = front.loop
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.lost = False
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None  # the request whose body is arriving
        self._queue: deque[Request] = deque()  # parsed, waiting for the one being answered
        self._task: asyncio.Task[None] | None = None  # `_serve`, from the first request on
        self._current: Request | None = None  # the request being answered
        self._ready: asyncio.Future[None] | None = None  # `_serve` waits for the next request
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._active_at = 0.0  # when the connection opened or its last answer went
        self._got = 0  # bytes received, and as many at the last idle check:
        self._got_seen = 0  # a body that has stopped arriving is told by them
        self._slow: asyncio.TimerHandle | None = None  # a head that has not come whole yet
        self._broken = False  # a refused request: nothing more is read
        self._refused: Refused | None = None  # to answer after those before it
        # The head being parsed:
        self._target = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._named: dict[bytes, bytes] = {}
        self._head_size = 0  # the whole fields' so far (httptools tells of one as the next begins)
        self._head_reads = 0  # the reads after the one the head began in, while it is arriving
        self._in_head = False
        self._length: int | None = None
        self._chunked = False

    # --- asyncio's side --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.front.connections.add(self)
        self._active_at = self.loop.time()
        self._idle = self.loop.call_at(self._active_at + self.front.keepalive, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.front.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._slow is not None:
            self._slow.cancel()
        if self._task is not None:
            self._task.cancel()  # the client left: so does its request, upstream too
        self._queue.clear()
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        self._got += len(data)
        if self._in_head:
            self._head_reads += len(data)
        try:
            self._parser.feed_data(data)
            # A field still arriving is held whole inside httptools: bound it too. Both sizes fall
            # short of the head's (by its last field, by its first read), neither goes past it.
            if self._in_head and max(self._head_size, self._head_reads) > MAX_HEAD:
                raise Refused(431, f"request head larger than {MAX_HEAD // 1024} KiB")
            if self._in_head and self._slow is None:  # rare: a head split over reads
                self._slow = self.loop.call_later(self.front.head_timeout, self._too_slow)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, Refused) else Refused(400, f"malformed request: {exc}"))
        except httptools.HttpParserUpgrade:
            self._broken = True  # what follows is another protocol's, which the gateway does not pass on
        except httptools.HttpParserError as exc:
            self._refuse(Refused(400, f"malformed request: {exc}"))
        except Refused as exc:
            self._refuse(exc)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # --- llhttp's callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._fields = []
        self._named = {}
        self._head_size = self._head_reads = 0
        self._in_head = True
        self._length = None
        self._chunked = False

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > MAX_TARGET:
            raise Refused(414, f"request target longer than {MAX_TARGET // 1024} KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        if size > MAX_FIELD:
            raise Refused(431, f"a header field larger than {MAX_FIELD // 1024} KiB")
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise Refused(431, f"request head larger than {MAX_HEAD // 1024} KiB")
        if len(self._fields) >= MAX_FIELDS:
            raise Refused(431, f"more than {MAX_FIELDS} header fields")
        self._fields.append((name, value))
        lower = name.lower()
        self._named.setdefault(lower, value)
        if lower == b"content-length":
            self._length = int(value)  # llhttp has checked that it is one number
        elif lower == b"transfer-encoding":
            self._chunked = True  # llhttp has checked that chunked is the last coding

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._slow is not None:
            self._slow.cancel()
            self._slow = None
        parser = self._parser
        upgrade = parser.should_upgrade()  # llhttp reads no body then
        request = Request(
            self,
            parser.get_method().decode("ascii"),
            self._target.decode("latin-1"),
            parser.get_http_version(),
            tuple(self._fields),
            self._named,
            None if upgrade or self._chunked else self._length,
            self._chunked and not upgrade,
            parser.should_keep_alive() and not upgrade,
        )
        if request.body is not None:
            self._parsing = request
        if self._current is None:
            self._current = request
            if self._task is None:
                self._task = self.loop.create_task(self._serve())
            elif self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif len(self._queue) >= MAX_PIPELINED:
            raise Refused(429, f"more than {MAX_PIPELINED} requests pipelined")
        else:
            self._queue.append(request)
            self.reading()

    def on_body(self, data: bytes) -> None:
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body._feed(data)

    def on_message_complete(self) -> None:
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body._end()
        self._parsing = None

    # --- answering ---------------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the connection's requests in turn, `_current` first: one task a connection rather
        than one a request (a task costs more to make than a future to wake it)."""
        while True:
            request = self._current
            if request is None:
                self._ready = self.loop.create_future()
                await self._ready
                continue
            try:
                response = await self.front.handler(request)
                if response is not None:
                    request.send(response)
            except asyncio.CancelledError:
                self.abort()
                raise
            except Refused as exc:  # the body turned out malformed
                self._unanswered(request, _error(exc.status, exc.message))
            except Exception:
                _log.exception("answering %s %s", request.method, request.target[:200])
                self._unanswered(request, _error(500, "the gateway failed to answer"))
            body = request.body
            if request._sent != 2 or not request.keep_alive or (body is not None and not body.done) or self.lost:
                # The rest of an unread body would have to be read to find the next request: not worth it.
                self._current = None
                self.close()
                return
            self._current = self._queue.popleft() if self._queue else None
            if self._current is None and self._refused is not None:
                self._refuse(self._refused)
                return
            self._active_at = self.loop.time()
            self.reading()  # (the next one's body may be still to come)

    def _unanswered(self, request: Request, response: Response) -> None:
        if request._sent == 0:
            request.keep_alive = False
            request.send(response)
        else:
            self.abort()

    def reading(self) -> None:
        """Read from the client while nothing waits for the request being answered."""
        if self.transport is None or self.lost:
            return
        parsing = self._parsing
        pause = bool(self._queue) or (
            parsing is not None and parsing.body is not None and parsing.body.waiting > HIGH_WATER
        )
        if pause != self._paused:
            self._paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained
        if self.lost:
            raise ConnectionResetError("the client closed the connection")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, refused: Refused) -> None:
        """Answer `refused` once what was asked before it is answered, then close; read nothing more."""
        self._broken = True
        parsing = self._parsing
        if parsing is not None and parsing.body is not None and not parsing.body.done:
            parsing.body._fail(refused)  # its handler hears of it as it reads
            return
        if self._current is not None or self._queue:
            self._refused = refused
            return
        request = Request(self, "GET", "", "1.1", (), {}, None, False, False)
        request.send(_error(refused.status, refused.message))
        self.close()

    def _idle_check(self) -> None:
        """Close the connection once no request has begun for `keepalive` seconds since its last
        answer; drop it once a body the handler waits for has not grown in as long. One timer a
        connection, not one a request: it looks again when the connection may be due."""
        now = self.loop.time()
        due = now + self.front.keepalive
        if self._current is not None:
            parsing = self._parsing
            waited_on = parsing is not None and parsing.body is not None and parsing.body._waiter is not None
            if waited_on and not self._paused and self._got == self._got_seen:
                self.abort()  # the handler is cancelled: it gets no more of the body
                return
            self._got_seen = self._got
        elif not self._in_head:  # (a head on its way has its own timer, `_slow`)
            due = self._active_at + self.front.keepalive
            if due <= now:
                self.close()
                return
        self._idle = self.loop.call_at(due, self._idle_check)

    def _too_slow(self) -> None:
        self._slow = None
        self._refuse(Refused(408, f"request head not whole within {self.front.head_timeout:g} s"))

    @property
    def busy(self) -> bool:
        return self._current is not None


class Front:
    """The server: one `ClientConnection` per client, every request to `handler`."""

    def __init__(
        self, handler: Handler, loop: asyncio.AbstractEventLoop, keepalive: float = 75.0, head_timeout: float = 10.0
    ) -> None:
        self.handler = handler
        self.loop = loop
        self.keepalive = keepalive
        self.head_timeout = head_timeout
        self.connections: set[ClientConnection] = set()

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    async def shutdown(self, within: float) -> None:
        """Close idle connections, give those answering `within` seconds, then drop them."""
        deadline = self.loop.time() + within
        while True:
            for conn in [c for c in self.connections if not c.busy]:
                conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()


def _error(status: int, message: str) -> Response:
    return Response(status, _encode({"error": message}), [("Content-Type", "application/json")])


_date: tuple[int, bytes] = (0, b"")


def date_line() -> bytes:
    """`Date: ...` as a field line, made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii"))
    return _date[1]


_REASONS = {status.value: status.phrase for status in HTTPStatus}
