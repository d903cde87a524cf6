"""How far a client is behind a response stream: bytes sent against bytes its TCP has acknowledged.

granian's RSGI stream transport queues whatever `send_bytes` is given in an unbounded channel and
returns at once: it never waits for the socket, so a watcher that stops reading would have every
later change queued for it in the server's memory. The signal that is left is the kernel's: the
`tcpi_bytes_acked` of the connection, which Linux reports for any socket by its addresses through
sock_diag (`ss` asks the same way), about 10 us a question, no privilege and no file descriptor
needed. A stream asks only once what it has sent runs past what it knew was acknowledged by more
than its buffer, so a client that keeps up costs nothing.

Where sock_diag cannot answer (not Linux), nothing counts as acknowledged: a stream is then ended
once it has sent its buffer's worth and the client timeout has passed, and the client resumes.
"""

from __future__ import annotations

import asyncio
import socket
import struct

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_INET_DIAG_INFO = 2
_NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTRIBUTE = struct.Struct("=HH")  # rtattr: length, type
_DIAG_MSG_SIZE = 72  # struct inet_diag_msg, before its attributes
_BYTES_ACKED = struct.Struct("=Q")  # struct tcp_info's tcpi_bytes_acked ...
_BYTES_ACKED_AT = 120  # ... at this offset (Linux 4.1 and later)
_LONGEST_POLL = 1.0

_netlink: socket.socket | None = None
_netlink_failed = False


def _diag_socket() -> socket.socket | None:
    global _netlink, _netlink_failed
    if _netlink is None and not _netlink_failed:
        try:
            _netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
            _netlink.settimeout(1.0)  # the kernel answers within the send; this is only a backstop
        except (OSError, AttributeError):  # not Linux
            _netlink_failed = True
    return _netlink


def _split(address: str) -> tuple[str, int]:
    """ "10.0.0.1:80" or "[::1]:80" (as granian's scope spells them) -> host, port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def diag_request(local: str, remote: str) -> bytes:
    """A sock_diag question for the TCP connection between two "host:port" addresses."""
    (src, sport), (dst, dport) = _split(local), _split(remote)
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    sockid = (
        struct.pack("!HH", sport, dport)
        + socket.inet_pton(family, src).ljust(16, b"\0")
        + socket.inet_pton(family, dst).ljust(16, b"\0")
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    )
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1), 0, 0xFFFFFFFF) + sockid
    return _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 0, 0) + body


def bytes_acked(request: bytes) -> int | None:
    """What the peer of the connection `request` names has acknowledged; None if that is unknown."""
    netlink = _diag_socket()
    if netlink is None:
        return None
    try:
        netlink.send(request)
        answer = netlink.recv(8192)
    except OSError:
        return None
    length, kind = _HEADER.unpack_from(answer)[:2]
    if kind != _SOCK_DIAG_BY_FAMILY:  # an error: the connection is gone
        return None
    at = _HEADER.size + _DIAG_MSG_SIZE
    while at + _ATTRIBUTE.size <= length:
        size, kind = _ATTRIBUTE.unpack_from(answer, at)
        if size < _ATTRIBUTE.size:
            return None
        if kind == _INET_DIAG_INFO and size - _ATTRIBUTE.size >= _BYTES_ACKED_AT + _BYTES_ACKED.size:
            return int(_BYTES_ACKED.unpack_from(answer, at + _ATTRIBUTE.size + _BYTES_ACKED_AT)[0])
        at += (size + 3) & ~3
    return None


class Unsent:
    """What one response stream has sent that its client has not taken, held under `buffer` bytes."""

    __slots__ = ("_base", "_request", "acked", "buffer", "patience", "sent")

    def __init__(self, local: str, remote: str, buffer: int, patience: float) -> None:
        self.buffer = buffer
        self.patience = patience
        self._request = diag_request(local, remote)
        self._base = bytes_acked(self._request) or 0  # what earlier answers on the connection took
        self.sent = 0
        self.acked = 0

    def _refresh(self) -> None:
        acked = bytes_acked(self._request)
        if acked is not None:
            # Chunk framing counts as acknowledged too, so a drained stream reads as <= 0 behind.
            self.acked = acked - self._base

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes fit, by what was last known to be acknowledged."""
        behind = self.sent - self.acked
        return behind <= 0 or behind + size <= self.buffer  # one part larger than the buffer goes alone

    async def room(self, size: int) -> bool:
        """Wait until `size` more bytes fit; False if the client has not made room within `patience`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        delay = 0.005
        while True:
            self._refresh()
            if self.fits(size):
                return True
            if loop.time() >= deadline:
                return False
            # A client that has stopped reading is asked less and less often.
            await asyncio.sleep(min(delay, deadline - loop.time()))
            delay = min(delay * 2, _LONGEST_POLL)
