"""The DNS sockets: bound where `swarm serve` starts, served by granian's worker on its event loop.

They are bound before the worker is forked (as the HTTP listener is), so that a port in use is a
one-line error at startup, and the worker inherits them. The worker starts serving them once its
core has started, beside the HTTP front, and stops them before the core stops.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from ...core.core import Core
from ...errors import SwarmError
from .front import DnsFront
from .settings import DnsSettings
from .tcp import Clients, TcpConnection
from .udp import UdpServer

BACKLOG = 1024  # TCP connections the kernel queues beyond those served


class DnsUnavailable(SwarmError):
    """The DNS address cannot be had: in use, not this host's, or not an address."""


class DnsListener:
    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self.udp, self.tcp = _bind(settings)
        self.clients = Clients()
        self.front: DnsFront | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, core: Core) -> None:
        loop = asyncio.get_running_loop()
        front = self.front = DnsFront(self.settings, core)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: UdpServer(front), sock=self.udp)
        self._tcp = await loop.create_server(lambda: TcpConnection(front, self.clients), sock=self.tcp, backlog=BACKLOG)

    def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        self.clients.close_all()


def _bind(settings: DnsSettings) -> tuple[socket.socket, socket.socket]:
    """A UDP socket and a TCP listener on the same port, which no other process may share."""
    where = f"--dns: cannot serve on {settings.shown}"
    try:
        found = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DnsUnavailable(f"{where}: {exc.strerror}") from None
    family, _, _, _, address = found[0]
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        # No SO_REUSEADDR on the UDP socket: on Linux it would let a second server share the port.
        udp.bind(address)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart beside TIME_WAIT connections
        tcp.bind((address[0], udp.getsockname()[1], *address[2:]))
        tcp.listen(BACKLOG)
    except OSError as exc:
        udp.close()
        tcp.close()
        if exc.errno == errno.EADDRINUSE:
            raise DnsUnavailable(
                f"--dns: port {settings.port} on {settings.host} is in use (another swarm serve, or a DNS server?)"
            ) from None
        raise DnsUnavailable(f"{where}: {exc.strerror}") from None
    udp.setblocking(False)
    tcp.setblocking(False)
    return udp, tcp
