"""Real backends on loopback that the health tests start, stop, slow down and make fail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.server import free_port


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that went away (a probe past its timeout, a killed server): nothing to say.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


class Served:
    """An http.server handler served from a thread on a loopback port, until `stop()`; `start()` again."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self._handler = handler
        self._tls = tls
        self._server: _Server | None = None
        self.start()

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), self._handler)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class HttpBackend(Served):
    """Answers GET /health with `status` after `delay` seconds; `stop()` closes the port."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.status = 200
        self.delay = 0.0
        self.hits = 0
        backend = self

        class Handler(Quiet):
            def do_GET(self) -> None:
                backend.hits += 1
                time.sleep(backend.delay)
                body = b"ok" if backend.status < 400 else b"failing"
                self.send_response(backend.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        super().__init__(Handler, tls)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/health"


class HtmlServer(Served):
    """A web server that is not a swarm server: every GET is a 404 HTML page."""

    PAGE = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>" + b"x" * 2000 + b"</body></html>"

    def __init__(self) -> None:
        page = self.PAGE

        class Handler(Quiet):
            def do_GET(self) -> None:
                self.send_response(404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        super().__init__(Handler)


def self_signed(directory: Path) -> ssl.SSLContext:
    """A TLS context with a throwaway self-signed certificate, made by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class TcpBackend:
    """Accepts connections while started."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._sock: socket.socket | None = None
        self.start()

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class GrpcBackend:
    """A gRPC server with the standard health service; `set(service, serving)` flips a status."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._server.add_insecure_port(self.target)
        self._server.start()
        self.set("", True)

    def set(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self._health.set(service, status)

    def stop(self) -> None:
        self._server.stop(grace=None)


class StreamingBackend:
    """An HTTP backend on the test's own event loop that answers 200 with `body_size` bytes, or with
    a body that never ends (None); it counts what it sent, its connections and how many were closed."""

    CHUNK = b"x" * 65536

    def __init__(self, body_size: int | None = None) -> None:
        self.body_size = body_size
        self.sent = 0
        self.connections = 0
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/health"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):  # the client hung up
            while await reader.readuntil(b"\r\n\r\n"):
                if self.body_size is None:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    while True:  # until the client hangs up
                        writer.write(b"%x\r\n%s\r\n" % (len(self.CHUNK), self.CHUNK))
                        self.sent += len(self.CHUNK)
                        await writer.drain()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.body_size)
                writer.write(b"x" * self.body_size)
                self.sent += self.body_size
                await writer.drain()
        self.closed.set()
        writer.close()


class BlackHole:
    """Accepts connections on `ports` loopback ports and never answers; `held` counts what it holds."""

    def __init__(self, ports: int = 1) -> None:
        self._socks: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self.urls: list[str] = []
        for _ in range(ports):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            self._socks.append(sock)
            self.urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}/health")
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    @property
    def held(self) -> int:
        return len(self._held)

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def stop(self) -> None:
        for sock in (*self._socks, *self._held):
            sock.close()
