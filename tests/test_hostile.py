"""Hostile load: silent sockets, piles of long reads, watchers that never read, junk methods, smuggling.

Each test shows the server stays up, answers other clients at once and stays bounded. Caps and
timeouts are lowered with `swarm serve` flags where the defaults would make a test slow.
"""

from __future__ import annotations

import contextlib
import random
import resource
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import instance, unique, wait_for
from tests.server import Server


@pytest.fixture(autouse=True, scope="module")
def _open_files() -> None:
    """These tests hold more sockets than the usual soft limit of 1,024 allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[Server]:
    server = Server(tmp_path / "data", args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(server: Server, source: str = "127.0.0.1", receive_buffer: int | None = None) -> socket.socket:
    """A raw connection from `source` (any 127.x.y.z is loopback on Linux)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def send_get(sock: socket.socket, target: str) -> None:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\n\r\n".encode())


def head_of(sock: socket.socket, timeout: float = 5.0) -> str:
    """The status line and headers of the answer on `sock` (a body that came with them, after them)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server ends the connection within `seconds` (whatever it still had to send, read)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def long_reads(server: Server) -> int:
    return int(server.http.get("/v1/server").json()["watchers"])


def answers_at_once(server: Server) -> None:
    """A write and a read from another client, each answered well within a second."""
    service = unique("other")
    with httpx.Client(base_url=server.url, timeout=2) as other:
        began = time.monotonic()
        assert other.put(f"/v1/services/{service}/instances/a", json=instance()).status_code == 200
        assert other.get(f"/v1/services/{service}").json()[0]["id"] == "a"
        assert time.monotonic() - began < 1.0


def test_idle_connections_do_not_lock_other_clients_out(tmp_path: Path) -> None:
    """1,100 sockets that send nothing: granian used to serve 1,024 connections and then no more."""
    with serving(tmp_path) as server:
        idle = [connect(server) for _ in range(1100)]
        try:
            answers_at_once(server)
        finally:
            for sock in idle:
                sock.close()


def test_silent_slow_and_idle_connections_are_closed_after_the_client_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, "--client-timeout", "500ms") as server:
        silent = connect(server)
        slow = connect(server)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # ... and the rest of the head never comes
        idle = connect(server)
        send_get(idle, "/healthz")
        assert head_of(idle).startswith("HTTP/1.1 200")
        began = time.monotonic()
        for sock in (silent, slow, idle):
            assert closed_within(sock, 3.0)
            sock.close()
        assert time.monotonic() - began < 3.0


def test_long_reads_are_capped_per_client_and_in_all(tmp_path: Path) -> None:
    caps = ("--max-long-reads", "20", "--max-long-reads-per-client", "12")
    with serving(tmp_path, *caps) as server:
        index = server.http.get("/v1/services/quiet").headers["x-swarm-index"]
        blocking = f"/v1/services/quiet?index={index}&wait=1m"
        first = [connect(server, "127.0.0.2") for _ in range(12)]
        for sock in first:
            send_get(sock, blocking)
        wait_for(lambda: long_reads(server) == 12)

        refused = connect(server, "127.0.0.2")
        send_get(refused, "/v1/watch?service=quiet")
        answer = head_of(refused)
        assert answer.startswith("HTTP/1.1 429") and "retry-after: 5" in answer
        assert '{"error":"too many open blocking queries and watches from 127.0.0.2 (at most 12)"}' in answer

        second = [connect(server, "127.0.0.3") for _ in range(8)]
        for sock in second:
            send_get(sock, "/v1/watch?service=quiet")
        wait_for(lambda: long_reads(server) == 20)
        full = connect(server, "127.0.0.4")
        send_get(full, blocking)
        assert head_of(full).startswith("HTTP/1.1 429")
        answers_at_once(server)  # short requests still have room

        for sock in first:
            sock.close()
        wait_for(lambda: long_reads(server) == 8)  # slots come back when clients leave
        again = connect(server, "127.0.0.2")
        send_get(again, "/v1/watch?service=quiet")
        assert head_of(again).startswith("HTTP/1.1 200")
        for sock in (refused, full, again, *second):
            sock.close()


def test_a_pile_of_blocking_queries_leaves_room_for_writes(tmp_path: Path) -> None:
    """1,100 blocking queries from one client: it gets 1,024 of them, and others are served."""
    with serving(tmp_path) as server:
        index = server.http.get("/v1/services/quiet").headers["x-swarm-index"]
        waiting = [connect(server) for _ in range(1100)]
        try:
            for sock in waiting:
                send_get(sock, f"/v1/services/quiet?index={index}&wait=1m")
            wait_for(lambda: long_reads(server) == 1024)
            answers_at_once(server)
        finally:
            for sock in waiting:
                sock.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _read_stream(url: str, ids: list[int]) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=None)) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))


def test_watchers_that_never_read_are_bounded_and_cut_off(tmp_path: Path) -> None:
    """40 watchers that take nothing, 300 changes of 60 KB: each would have had 18 MB queued."""
    with serving(tmp_path, "--client-timeout", "1s") as server:
        worker = server.worker_pid()
        stalled = [connect(server, receive_buffer=4096) for _ in range(40)]
        for sock in stalled:
            send_get(sock, "/v1/watch?service=big")
        seen: list[int] = []
        reader = threading.Thread(target=_read_stream, args=(f"{server.url}/v1/watch?service=big", seen), daemon=True)
        reader.start()
        wait_for(lambda: long_reads(server) == 41)
        before = _rss_mib(worker)
        blob = ["x" * 1000] * 60  # 60 KB in strings a capability may hold
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for n in range(300):
                body = instance(capabilities={"blob": blob, "n": n})
                last = http.put(f"/v1/services/big/instances/i{n % 10}", json=body).headers["x-swarm-index"]
        grown = _rss_mib(worker) - before
        assert grown < 300, f"resident memory grew by {grown:.0f} MiB"  # it grew by about 750 before
        wait_for(lambda: long_reads(server) == 1)  # only the reader is left
        for sock in stalled:
            assert closed_within(sock, 5.0)
            sock.close()
        wait_for(lambda: bool(seen) and seen[-1] == int(last))  # a client that reads is never cut off


def test_request_metrics_have_a_fixed_set_of_labels(shared_server: Server) -> None:
    """Random methods and paths are counted as OTHER and unmatched, not a series each."""
    letters = string.ascii_uppercase
    methods = ["".join(random.choices(letters, k=12)) for _ in range(200)]
    with httpx.Client(base_url=shared_server.url) as http:
        for method in methods:
            http.request(method, f"/{method.lower()}")
        text = http.get("/metrics").text
    assert not any(method in text for method in methods)
    assert 'swarm_http_requests_total{code="404",method="OTHER",route="unmatched"} 200.0' in text
    assert len(text) < 100_000


def test_content_length_beside_chunked_cannot_smuggle_a_request(shared_server: Server) -> None:
    """The chunks decide, and the connection closes after the answer: nothing after them is run.

    A proxy that went by Content-Length would take the second request as part of the first body.
    granian (hyper) goes by Transfer-Encoding, drops Content-Length and closes the connection, so
    the tail is never read as a request of its own.
    """
    service = unique("smuggle")
    body = httpx.Request("PUT", "/", json=instance()).content
    smuggled = (
        f"DELETE /v1/services/{service}/instances/a HTTP/1.1\r\nHost: test\r\n\r\n"
        f"PUT /v1/services/{service}/instances/smuggled HTTP/1.1\r\nHost: test\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        f"PUT /v1/services/{service}/instances/a HTTP/1.1\r\nHost: test\r\n"
        f"Content-Length: {len(chunked) + len(smuggled)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with contextlib.closing(connect(shared_server)) as sock:
        sock.sendall(request + chunked + smuggled)
        head = head_of(sock)
        assert head.startswith("HTTP/1.1 200") and "connection: close" in head.lower()
        assert closed_within(sock, 5.0)
    assert shared_server.http.get(f"/v1/services/{service}/instances/a").status_code == 200
    assert shared_server.http.get(f"/v1/services/{service}/instances/smuggled").status_code == 404


def test_sigterm_stops_the_server_in_time_with_a_watcher_that_never_reads(tmp_path: Path) -> None:
    """Its connection would end only at the client timeout (10 s): the worker is not waited for."""
    server = Server(tmp_path / "data")
    server.start()
    stalled = connect(server, receive_buffer=4096)
    send_get(stalled, "/v1/watch?service=big")
    wait_for(lambda: long_reads(server) == 1)
    for n in range(40):
        server.http.put(
            f"/v1/services/big/instances/i{n % 10}", json=instance(capabilities={"blob": ["x" * 1000] * 60})
        )
    began = time.monotonic()
    server.stop(within=5.0)
    assert time.monotonic() - began < 5.0
    stalled.close()
    restarted = Server(tmp_path / "data")  # the data directory is free again, every write kept
    restarted.start()
    assert len(restarted.http.get("/v1/services/big").json()) == 10
    restarted.stop()
