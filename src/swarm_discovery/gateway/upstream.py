"""Connections to instances: HTTP/1.1 keep-alive, one exchange at a time, pooled per address.

A small asyncio protocol rather than an HTTP client library: proxying a small answer through it
costs about a third of what it costs through aiohttp's client (which parses into multidicts,
tracks cookies and runs per-request timers and traces), and the gateway needs none of that. The
answer's head is parsed by `wire.py`; its body is handed on as it arrives.

What is buffered is bounded: a connection stops reading from its socket once HIGH_WATER bytes
are waiting to be taken (the kernel's window then slows the instance down) and starts again
when they are. At most `max_idle` idle connections are kept per instance, none longer than
`idle_timeout`; a connection is reused only when its last answer was complete and framed.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import SwarmError
from .wire import MAX_HEAD, BadResponse, Chunked, Head, parse_head

HIGH_WATER = 256 * 1024
ADDRESS = tuple[str, int]


class UpstreamError(SwarmError):
    """An exchange with an instance failed before it completed.

    `sent`: some of the request may have reached the instance. `refused`: nothing listens there.
    `stale`: a reused idle connection closed before anything was answered on it (the instance
    closed it while idle, a race every keep-alive client meets), which a fresh connection undoes.
    """

    def __init__(
        self, message: str, *, sent: bool = True, refused: bool = False, stale: bool = False, timeout: bool = False
    ) -> None:
        super().__init__(message)
        self.sent = sent
        self.refused = refused
        self.stale = stale
        self.timeout = timeout


class Connection(asyncio.Protocol):
    def __init__(self, address: ADDRESS, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._due = 0.0  # when the wait under way times out
        self._timer: asyncio.TimerHandle | None = None  # set for `_timer_at`, at or before `_due`
        self._timer_at = 0.0
        self._drained: asyncio.Future[None] | None = None
        self._eof = False
        self._error: Exception | None = None
        self._reading_paused = False
        self._received = False  # any byte of the current answer
        self._head: Head | None = None
        self._left: int | None = None  # bytes of a Content-Length body still to come
        self._chunked: Chunked | None = None
        self.reusable = False

    # --- asyncio's side ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._received = True
        if len(self._buffer) > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if self._timer is not None:
            self._timer.cancel()
        self._error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _wait(self, deadline: float) -> asyncio.Future[None]:
        """What the next bytes (or the end) complete, or `deadline` fails with TimeoutError. One timer
        a connection, not one a wait: set anew only for a deadline sooner than it (each exchange's
        come later), it looks at the wait under way when it fires."""
        waiter = self._waiter = self._loop.create_future()
        self._due = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check)
            self._timer_at = deadline
        return waiter

    def _check(self) -> None:
        waiter = self._waiter
        self._timer = None
        if waiter is None or waiter.done():
            return
        if self._loop.time() >= self._due:
            waiter.set_exception(TimeoutError())
        else:  # a later wait's, or fired early (uvloop rounds to milliseconds)
            self._timer = self._loop.call_at(self._due, self._check)
            self._timer_at = self._due

    def _taken(self) -> None:
        if self._reading_paused and len(self._buffer) <= HIGH_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # --- the gateway's side ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._eof or self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained
        if self._eof:
            raise self._failure("closed the connection while the request was sent")

    def _failure(self, what: str) -> UpstreamError:
        stale = self.reused and not self._received
        detail = f": {self._error}" if self._error else ""
        return UpstreamError(f"{what}{detail}", stale=stale)

    async def head(self, deadline: float, bodiless: bool) -> Head:
        """The answer's head, once it is all there; interim (1xx) answers are skipped."""
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = parse_head(bytes(self._buffer[:end]), bodiless)
                del self._buffer[: end + 4]
                if head.status == 101:
                    raise BadResponse("switched protocols, which the gateway does not pass on")
                if head.status >= 200:
                    self._head = head
                    self._left = head.length
                    self._chunked = Chunked() if head.chunked else None
                    self._taken()
                    return head
                continue
            if len(self._buffer) > MAX_HEAD:
                raise BadResponse(f"response head larger than {MAX_HEAD // 1024} KiB")
            if self._eof:
                raise self._failure("closed the connection before answering")
            try:
                await self._wait(deadline)
            except TimeoutError:
                raise UpstreamError("no answer in time", timeout=True) from None

    async def read(self, deadline: float) -> bytes:
        """The next part of the body as it arrives; b"" once it is complete."""
        buffer = self._buffer
        while True:
            if self._left is not None:
                if self._left == 0:
                    return self._complete()
                if buffer:
                    data = bytes(buffer[: self._left])
                    del buffer[: len(data)]
                    self._left -= len(data)
                    self._taken()
                    return data
            elif self._chunked is not None:
                data = self._chunked.feed(buffer)
                self._taken()
                if data:
                    return data
                if self._chunked.done:
                    return self._complete()
            elif buffer:  # until the connection closes
                data = bytes(buffer)
                buffer.clear()
                self._taken()
                return data
            elif self._eof:
                return self._complete()
            if self._eof:
                raise self._failure("closed the connection before the body ended")
            try:
                await self._wait(deadline)
            except TimeoutError:
                raise UpstreamError("sent nothing more of the body in time", timeout=True) from None

    def body_ready(self) -> bytes | None:
        """The whole body if it has all arrived already and has a length (the common small answer)."""
        left = self._left
        if left is None or len(self._buffer) < left:
            return None
        data = bytes(self._buffer[:left])
        del self._buffer[:left]
        self._left = 0
        self._complete()
        return data

    def _complete(self) -> bytes:
        head = self._head
        # Anything after the answer is a protocol error of the instance's: do not reuse.
        self.reusable = head is not None and head.keep_alive and not self._eof and not self._buffer
        return b""

    def close(self) -> None:
        """Drop the connection (an exchange given up halfway leaves it unusable)."""
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Ready for the next exchange."""
        self._head = None
        self._received = False
        self._left = None
        self._chunked = None
        self.reusable = False


class Upstreams:
    """Connections to instances, pooled by address."""

    def __init__(self, max_idle: int = 64, idle_timeout: float = 30.0) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[ADDRESS, list[Connection]] = {}
        self.opened = 0

    def pooled(self, host: str, port: int) -> Connection | None:
        """An idle connection to the address, if one is still good."""
        idle = self._idle.get((host, port))
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_timeout:
                    conn.reused = True
                    return conn
                conn.close()
        return None

    async def connect(self, host: str, port: int, timeout: float, fresh: bool = False) -> Connection:
        """A pooled connection (unless `fresh`), or a new one."""
        conn = None if fresh else self.pooled(host, port)
        if conn is not None:
            return conn
        address = (host, port)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: Connection(address, loop), host, port)
        except ConnectionRefusedError as exc:
            raise UpstreamError(f"connection refused ({exc.strerror})", sent=False, refused=True) from None
        except TimeoutError:
            raise UpstreamError(f"no connection within {timeout:g} s", sent=False, timeout=True) from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {exc.strerror or exc}", sent=False) from None
        self.opened += 1
        return conn

    def release(self, conn: Connection) -> None:
        """Back to the pool if it can take another exchange; closed otherwise."""
        if not conn.reusable or conn.closed:
            conn.close()
            return
        conn.reset()
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.address, [])
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).close()

    def sweep(self) -> None:
        """Close connections idle past `idle_timeout`, and forget addresses with none left."""
        now = time.monotonic()
        for address, idle in list(self._idle.items()):
            kept = [c for c in idle if not c.closed and now - c.idle_since < self.idle_timeout]
            for conn in idle:
                if conn not in kept:
                    conn.close()
            if kept:
                self._idle[address] = kept
            else:
                del self._idle[address]

    def idle(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
