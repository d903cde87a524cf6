"""DNS over TCP (RFC 7766): length-prefixed messages, pipelined, answered in order.

Everything a connection holds is bounded: one query of at most MAX_QUERY bytes (a longer
length closes the connection), replies queued up to TCP_WRITE_BUFFER (then its queries wait
unread, in the kernel, until the client takes its replies), and TCP_IDLE_SECONDS without a
completed query, whether it sends nothing, sends slowly or takes nothing, after which it is
closed. Connections are capped in all and per client address; past a cap one is closed at once.
"""

from __future__ import annotations

import asyncio
from typing import cast

from .front import DnsFront
from .settings import MAX_QUERY, TCP_CONNECTIONS, TCP_IDLE_SECONDS, TCP_PER_CLIENT, TCP_WRITE_BUFFER

_LENGTH = 2


class Clients:
    """The open connections, in all and per client address."""

    def __init__(self, per_client: int = TCP_PER_CLIENT, total: int = TCP_CONNECTIONS) -> None:
        self.open: set[TcpConnection] = set()
        self._by_host: dict[str, int] = {}
        self._per_client = per_client
        self._total = total

    def admit(self, connection: TcpConnection) -> bool:
        held = self._by_host.get(connection.host, 0)
        if held >= self._per_client or len(self.open) >= self._total:
            return False
        self._by_host[connection.host] = held + 1
        self.open.add(connection)
        return True

    def leave(self, connection: TcpConnection) -> None:
        if connection in self.open:
            self.open.discard(connection)
            left = self._by_host[connection.host] - 1
            if left:
                self._by_host[connection.host] = left
            else:
                del self._by_host[connection.host]

    def close_all(self) -> None:
        for connection in list(self.open):
            connection.abort()


class TcpConnection(asyncio.Protocol):
    def __init__(self, front: DnsFront, clients: Clients) -> None:
        self.front = front
        self.clients = clients
        self.host = ""
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if peer else ""
        if not self.clients.admit(self):
            transport.abort()
            return
        self._transport = transport
        transport.set_write_buffer_limits(high=TCP_WRITE_BUFFER)
        self._deadline = self._loop.time() + TCP_IDLE_SECONDS
        self._timer = self._loop.call_at(self._deadline, self._idle)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._answer()

    def _answer(self) -> None:
        buffer, transport = self._buffer, self._transport
        while not self._paused and len(buffer) >= _LENGTH and transport is not None:
            size = int.from_bytes(buffer[:_LENGTH])
            if size > MAX_QUERY:
                self.abort()
                return
            if len(buffer) < _LENGTH + size:
                return
            wire = bytes(buffer[_LENGTH : _LENGTH + size])
            del buffer[: _LENGTH + size]
            reply = self.front.reply(wire, tcp=True)
            if reply is None:  # not a query: nothing sensible follows on this connection
                self.abort()
                return
            self._deadline = self._loop.time() + TCP_IDLE_SECONDS
            transport.write(len(reply).to_bytes(_LENGTH) + reply)

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            self._answer()

    def _idle(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._idle)
        elif transport.get_write_buffer_size():
            transport.abort()  # it has not taken its replies: closing would wait for it to
        else:
            transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.leave(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        self._buffer.clear()
