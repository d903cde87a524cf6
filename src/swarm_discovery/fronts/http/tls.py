"""TLS for `swarm serve`: the server's TLS context, client certificates' identities, the mTLS relay.

With `--tls-cert` and `--tls-key` alone, granian serves HTTPS itself (rustls). With
`--tls-client-ca` too, every client must present a certificate signed by that CA, and the app must
learn whose it is, so that access control can map it to a policy; granian 2.8 verifies client
certificates but tells the application nothing about them. So then TLS ends here instead:
`Relay` accepts on the public port, completes the handshake with Python's ssl (which verifies the
client's certificate), and relays the decrypted bytes over loopback to granian, which serves HTTP
exactly as on a plain port, with all its limits. Before relaying a byte, it records under the
loopback address granian will give as the client (`peers`) who is at the other end: the client's
own address and its certificate's identity. The app (`rsgi.RelayedApp`) refuses any connection to
granian's loopback port that is not in `peers`, so nobody on the host gets past the certificate
check by connecting there directly. Plain HTTP never passes through here.

A relayed connection holds at most `RELAY_BUFFER` bytes each way that the other side has not taken,
and reading from a side stops while the other is full, so a client that takes nothing stalls its
own connection and nothing else; TCP_USER_TIMEOUT on the public listener drops it as on a plain one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ...certs import present, trust
from .limits import Limits

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("swarm")

RELAY_BUFFER = 64 * 1024  # what a relayed connection holds, each way, for a side that is not taking it
# The relay's receive buffer on its loopback connection: without a bound the kernel grows it to
# megabytes, and a stalled watcher's stream would count all of that as taken (`unsent.py`).
_RELAY_RECEIVE_BUFFER = 256 * 1024
_RETRY_ACCEPT = 0.1  # seconds before accepting again after an error (out of file descriptors)


class TlsFiles(msgspec.Struct, frozen=True):
    """What `--tls-cert`, `--tls-key` and `--tls-client-ca` name."""

    cert: str
    key: str
    client_ca: str | None = None

    def context(self) -> ssl.SSLContext:
        """The server's TLS context, requiring client certificates with `client_ca`; or
        `CertificateFileError` naming the option."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        present(context, self.cert, self.key, ("--tls-cert", "--tls-key"))
        if self.client_ca is not None:
            trust(context, self.client_ca, "--tls-client-ca")
            context.verify_mode = ssl.CERT_REQUIRED
        return context


# --- identities ------------------------------------------------------------------------------


def identity(cert: x509.Certificate) -> str | None:
    """Who a certificate names: its first DNS name, else URI, else email address among its
    subject alternative names; without any, its subject's common name; None if it has neither."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    except (ValueError, x509.DuplicateExtension):  # malformed: no name in it can be trusted
        return None
    if names is not None:
        for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name):
            found = names.get_values_for_type(kind)
            if found:
                return found[0]
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common:
        return None
    value = common[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def identity_from_der(der: bytes) -> str | None:
    from cryptography import x509

    try:
        return identity(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def identity_from_asgi(tls: Any) -> str | None:
    """The identity in an ASGI TLS extension (`scope["extensions"]["tls"]`), if it holds a verified
    client certificate. `client_cert_chain` is a list of PEM certificates, leaf first, as the spec
    says; a single PEM string, as some servers give, is read the same way."""
    from cryptography import x509

    if not isinstance(tls, dict) or tls.get("client_cert_error") is not None:
        return None
    chain = tls.get("client_cert_chain")
    leaf = chain if isinstance(chain, str) else next(iter(chain or ()), None)
    if not isinstance(leaf, str) or not leaf:
        return None
    try:
        return identity(x509.load_pem_x509_certificate(leaf.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return None


# --- the relay -------------------------------------------------------------------------------


class Peer:
    """Who is at the other end of a relayed connection: the client's address and certificate identity."""

    __slots__ = ("address", "identity")

    def __init__(self, address: str, identity: str | None) -> None:
        self.address = address
        self.identity = identity


class _End(asyncio.Protocol):
    """One end of a relayed connection: what arrives is written to the other end, while it has room.

    The client's end reads nothing until `_Pipe.open` (its bytes have nowhere to go before).
    """

    def __init__(self, pipe: _Pipe, paused: bool) -> None:
        self.pipe = pipe
        self.paused = paused
        self.transport: asyncio.Transport | None = None
        self.other: _End = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=RELAY_BUFFER)
        if self.paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        assert self.other.transport is not None
        self.other.transport.write(data)

    def eof_received(self) -> None:
        self.pipe.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close()

    def pause_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.resume_reading()


class _Pipe:
    """A client's TLS connection and the loopback connection to granian that carries it."""

    def __init__(self) -> None:
        self.client, self.server = _End(self, paused=True), _End(self, paused=False)
        self.client.other, self.server.other = self.server, self.client
        self.closed = asyncio.get_running_loop().create_future()

    def open(self) -> None:
        """Both ends are connected: relay."""
        assert self.client.transport is not None
        self.client.paused = False
        self.client.transport.resume_reading()

    def close(self, abort: bool = False) -> None:
        """End both connections: what one side sent is delivered first, unless `abort`."""
        if not self.closed.done():
            self.closed.set_result(None)
        for end in (self.client, self.server):
            if end.transport is not None:
                end.transport.abort() if abort else end.transport.close()


class Relay:
    """Accepts TLS connections on `listener` and relays each one, decrypted, to granian at `upstream`.

    At most `limits.connections` at once (more wait in the kernel's accept queue, as with granian),
    and a handshake must be over within the client timeout.
    """

    def __init__(
        self, listener: socket.socket, upstream: tuple[str, int], context: ssl.SSLContext, limits: Limits
    ) -> None:
        self.peers: dict[str, Peer] = {}  # by the loopback address granian sees: one per relayed connection
        self._listener = listener
        self._upstream = upstream
        self._context = context
        self._limits = limits
        self._room = asyncio.Semaphore(limits.connections)
        self._pipes: set[_Pipe] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._listener.setblocking(False)
        self._accepting = loop.create_task(self._accept())

    def stop_accepting(self) -> None:
        """Accept no more connections (the server is stopping); those open go on until granian ends them."""
        if self._accepting is not None:
            self._accepting.cancel()

    async def close(self) -> None:
        """Stop accepting and drop every connection."""
        self.stop_accepting()
        for pipe in list(self._pipes):
            pipe.close(abort=True)
        for task in self._serving:  # those still in their handshake
            task.cancel()
        await asyncio.gather(*self._serving, *filter(None, [self._accepting]), return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._room.acquire()
            try:
                sock, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # out of file descriptors, say: the client waits in the queue meanwhile
                self._room.release()
                log.warning("accepting a TLS connection failed: %s", exc)
                await asyncio.sleep(_RETRY_ACCEPT)
                continue
            except BaseException:
                self._room.release()
                raise
            task = loop.create_task(self._serve(sock))
            self._serving.add(task)
            task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._serving.discard(task)
        self._room.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("relaying a TLS connection failed", exc_info=task.exception())

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pipe = _Pipe()
        self._pipes.add(pipe)
        address = ""
        try:
            try:
                address = sock.getpeername()[0]
                await loop.connect_accepted_socket(
                    lambda: pipe.client, sock, ssl=self._context, ssl_handshake_timeout=self._limits.client_timeout
                )
            except OSError as exc:  # no certificate or an untrusted one, too slow a handshake, a client gone
                log.debug("TLS handshake from %s failed: %s", address or "a client", exc)
                sock.close()
                return
            assert pipe.client.transport is not None
            der = pipe.client.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            await self._relay(pipe, Peer(address, identity_from_der(der) if der else None))
        finally:
            pipe.close()
            self._pipes.discard(pipe)

    async def _relay(self, pipe: _Pipe, peer: Peer) -> None:
        """Connect `pipe` to granian on behalf of `peer`, and relay until either side ends."""
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        key = None
        try:
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RELAY_RECEIVE_BUFFER)
            upstream.setblocking(False)
            upstream.bind(("127.0.0.1", 0))
            key = f"127.0.0.1:{upstream.getsockname()[1]}"  # as granian's scope spells the client
            self.peers[key] = peer  # before granian can see a byte from it
            await loop.sock_connect(upstream, self._upstream)
            await loop.create_connection(lambda: pipe.server, sock=upstream)
            pipe.open()
            await pipe.closed
        except OSError as exc:
            log.warning("relaying a TLS connection to the HTTP server failed: %s", exc)
            upstream.close()
        finally:
            if key is not None:
                del self.peers[key]
