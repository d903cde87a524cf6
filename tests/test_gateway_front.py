"""The gateway's HTTP/1.1 front (`gateway/front.py`) on a loopback port, spoken to over raw sockets.

What a hostile or sloppy client can send: a malformed request line, too many or too large header
fields, a head that never ends, a body that stops, pipelined requests past the queue; and what
every client relies on: pipelined answers in order, keep-alive, HTTP/1.0 closing, request bodies
read as they arrive, a handler cancelled when its client leaves. Short timeouts, so each test
waits a fraction of a second for the front to act.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

import pytest
import uvloop

from swarm_discovery.gateway.front import MAX_FIELDS, MAX_PIPELINED, Front, Request, Response
from tests.helpers import wait_for

KEEPALIVE = 0.4
HEAD_TIMEOUT = 0.3


class Served:
    """A Front on a loopback port, on uvloop in a thread of its own, with a handler that says what it saw."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()  # a handler was cancelled
        self.first_part = threading.Event()  # /parts has read the first part of its body
        self.answered: list[str] = []
        self.loop = uvloop.new_event_loop()
        self.front = Front(self.handle, self.loop, KEEPALIVE, HEAD_TIMEOUT)
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(self.loop.create_server(self.front, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()
        server.close()

    async def handle(self, request: Request) -> Response | None:
        path = request.target
        try:
            if path == "/slow":
                await asyncio.sleep(0.2)
            elif path == "/parts":
                assert request.body is not None
                parts = [await request.body.read()]
                self.first_part.set()
                parts += [part async for part in request.body]
                return Response(200, b"|".join(parts), [])
            elif path == "/stream":
                await request.start(200, "OK", b"", None)
                while True:
                    await request.write(b"tick\n")
                    await asyncio.sleep(0.01)
            body = await request.body.whole() if request.body is not None else b""
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.answered.append(path)
        return Response(200, b"%s %d" % (path.encode(), len(body)), [("X-Target", path)])

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.stop()


def answer(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One answer with a Content-Length body (or none) off `reader`: status, fields, body."""
    line = reader.readline()
    assert line.startswith(b"HTTP/1.1 "), line
    fields: dict[str, str] = {}
    while (field := reader.readline()) != b"\r\n":
        name, _, value = field.decode("latin-1").partition(":")
        fields[name.lower()] = value.strip()
    return int(line.split()[1]), fields, reader.read(int(fields.get("content-length", 0)))


def closed(client: socket.socket, within: float = 5.0) -> bool:
    """Whether the front closes the connection (after anything it still sends) within `within` seconds."""
    client.settimeout(within)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def refused(served: Served, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """The one answer to `data` sent on a fresh connection, which must close after it."""
    with served.connect() as client:
        client.sendall(data)
        reader = client.makefile("rb")
        status, fields, body = answer(reader)
        assert reader.read() == b""  # and nothing more: closed
    assert fields["connection"] == "close" and fields["content-type"] == "application/json"
    return status, fields, body


def test_a_malformed_request_line_is_a_400_and_the_connection_closes(served: Served) -> None:
    status, _, body = refused(served, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400 and b"malformed request" in body
    status, _, _ = refused(served, b"HELLO\r\n\r\n")
    assert status == 400
    assert served.answered == []


def test_header_fields_past_their_limits_are_a_431(served: Served) -> None:
    many = b"".join(b"X-F%d: v\r\n" % n for n in range(MAX_FIELDS + 1))
    status, _, body = refused(served, b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    assert status == 431 and b"more than 128 header fields" in body
    large = b"X-Big: " + b"v" * (33 * 1024) + b"\r\n"
    status, _, body = refused(served, b"GET / HTTP/1.1\r\n" + large + b"\r\n")
    assert status == 431 and b"a header field larger than 32 KiB" in body
    # Each field under its limit, the head over its own.
    fields = b"".join(b"X-Part%d: " % n + b"v" * (30 * 1024) + b"\r\n" for n in range(3))
    status, _, body = refused(served, b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert status == 431 and b"request head larger than 64 KiB" in body
    # A field that never ends, sent in pieces: refused before it does.
    with served.connect() as client:
        client.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        with contextlib.suppress(OSError):  # the front stops reading, then closes
            for _ in range(100):
                client.sendall(b"v" * 4096)
        reader = client.makefile("rb")
        status, _, body = answer(reader)
        assert status == 431 and b"request head larger than 64 KiB" in body
    status, _, _ = refused(served, b"GET /" + b"a" * (33 * 1024) + b" HTTP/1.1\r\n\r\n")
    assert status == 414
    assert served.answered == []


def test_a_head_that_never_ends_is_a_408_even_sent_byte_by_byte(served: Served) -> None:
    started = time.monotonic()
    status, _, body = refused(served, b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert status == 408 and b"not whole within" in body
    assert HEAD_TIMEOUT <= time.monotonic() - started < HEAD_TIMEOUT + 2
    with served.connect() as client:  # a byte at a time, each well within the keep-alive timeout
        started = time.monotonic()
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"v" * 100:
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.02)
        assert b"HTTP/1.1 408 " in client.recv(65536) and closed(client)
        assert time.monotonic() - started < HEAD_TIMEOUT + 2
    assert served.answered == []


def test_a_body_that_stops_arriving_drops_the_connection_and_cancels_the_handler(served: Served) -> None:
    with served.connect() as client:
        client.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        assert closed(client)
        assert KEEPALIVE <= time.monotonic() - started < 2 * KEEPALIVE + 2
    assert served.cancelled.wait(5) and served.answered == []


def test_a_chunked_body_reaches_the_handler_as_it_arrives(served: Served) -> None:
    with served.connect() as client:
        client.sendall(b"POST /parts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        assert served.first_part.wait(5)  # before the rest is even sent
        client.sendall(b"6\r\nsecond\r\n0\r\n\r\n")
        assert answer(client.makefile("rb"))[2] == b"first|second"


def test_expect_100_continue_is_answered_before_the_body_is_sent(served: Served) -> None:
    """The front sends the 100 when its handler asks (the gateway does as it reads the body)."""

    async def handle(request: Request) -> Response:
        assert request.header(b"expect") == "100-continue" and request.body is not None
        request.continue_()
        return Response(200, await request.body.whole(), [])

    served.front.handler = handle
    with served.connect() as client:
        client.sendall(b"PUT /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        reader = client.makefile("rb")
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n" and reader.readline() == b"\r\n"
        client.sendall(b"body")
        assert answer(reader)[:3:2] == (200, b"body")


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: Served) -> None:
    with served.connect() as client:
        # The first takes longest: the others wait for it, each answered in turn.
        client.sendall(b"".join(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"slow", b"a", b"slow", b"b")))
        reader = client.makefile("rb")
        assert [answer(reader)[1]["x-target"] for _ in range(4)] == ["/slow", "/a", "/slow", "/b"]
        client.sendall(b"POST /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /d HTTP/1.1\r\n\r\n")
        assert [answer(reader)[2] for _ in range(2)] == [b"/c 3", b"/d 0"]


def test_a_pipelined_request_gets_its_body_read_once_its_turn_comes(served: Served) -> None:
    with served.connect() as client:
        client.sendall(b"GET /slow HTTP/1.1\r\n\r\nPOST /late HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
        reader = client.makefile("rb")
        assert answer(reader)[2] == b"/slow 0"
        client.sendall(b"body")  # only now, as its answer is awaited
        assert answer(reader)[2] == b"/late 4"


def test_requests_pipelined_past_the_queue_get_a_429_after_those_before(served: Served) -> None:
    with served.connect() as client:
        count = MAX_PIPELINED + 5
        client.sendall(b"GET /slow HTTP/1.1\r\n\r\n" + b"GET /a HTTP/1.1\r\n\r\n" * (count - 1))
        reader = client.makefile("rb")
        statuses = [answer(reader)[0] for _ in range(MAX_PIPELINED + 2)]
        assert statuses == [200] * (MAX_PIPELINED + 1) + [429]  # the one answered and those queued
        assert reader.read() == b""


def test_a_keep_alive_connection_serves_many_then_closes_when_idle(served: Served) -> None:
    with served.connect() as client:
        reader = client.makefile("rb")
        for n in range(3):
            client.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            status, fields, body = answer(reader)
            assert status == 200 and body == b"/%d 0" % n and "connection" not in fields
        time.sleep(KEEPALIVE / 2)  # idle, but not for long enough yet
        client.sendall(b"GET /again HTTP/1.1\r\n\r\n")
        assert answer(reader)[2] == b"/again 0"
        idle_from = time.monotonic()
        assert closed(client)
        assert KEEPALIVE * 0.9 <= time.monotonic() - idle_from < 2 * KEEPALIVE + 1  # (the clocks differ a little)


def test_http_1_0_closes_unless_it_asks_to_keep_alive(served: Served) -> None:
    with served.connect() as client:
        client.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reader = client.makefile("rb")
        status, fields, body = answer(reader)
        assert (status, body, fields["connection"]) == (200, b"/old 0", "close") and reader.read() == b""
    with served.connect() as client:
        reader = client.makefile("rb")
        for _ in range(2):
            client.sendall(b"GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, fields, body = answer(reader)
            assert (status, body, fields["connection"]) == (200, b"/kept 0", "keep-alive")


def test_a_client_that_leaves_mid_answer_cancels_its_handler(served: Served) -> None:
    with served.connect() as client:
        client.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
        received = b""
        while b"tick" not in received:
            received += client.recv(65536)
    assert served.cancelled.wait(5)
    wait_for(lambda: not served.front.connections)
