"""DNS over UDP: each datagram answered as it comes, on the server's event loop.

Nothing is kept per client. Replies that queue behind a full socket buffer are bounded by the
transport's high-water mark (64 KiB): past it, queries are dropped until it drains, as a busy
network would drop them, and resolvers ask again.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from .front import DnsFront


class UdpServer(asyncio.DatagramProtocol):
    def __init__(self, front: DnsFront) -> None:
        self.front = front
        self.transport: asyncio.DatagramTransport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.paused or self.transport is None:
            return
        reply = self.front.reply(data, tcp=False)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about an earlier reply: that asker is gone, nobody else is affected
