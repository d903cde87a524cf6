"""`swarm gateway` in front of real backends on loopback, following a real registry.

Routing by path and by Host, failover from a stopped or failing backend (and the registry seeing
it), a hanging backend, streaming both ways, a client that leaves, the registry going away, the
gateway's own answers and its command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from swarm_discovery import Client
from swarm_discovery.cli.main import app
from swarm_discovery.sdk.answers import NotSwarm
from tests.backends import BlackHole, Quiet, Served
from tests.conftest import FAST_EXPIRY
from tests.gateway import GatewayProcess
from tests.helpers import unique, wait_for
from tests.server import Server


class Echo(Served):
    """Answers every request with what it received (method, path, headers, body's size and hash) as JSON,
    with `status`; `stream` holds a streamed answer after its first part until it is set."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        self.hold = threading.Event()
        self.hold.set()
        self.cut_off = threading.Event()  # a streamed answer's client went away
        self.connections: set[socket.socket] = set()
        echo = self

        class Handler(Quiet):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                echo.connections.add(self.connection)

            def _answer(self) -> None:
                echo.hits += 1
                if self.path.startswith("/stream"):
                    return self._stream()
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = self._chunked()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = msgspec.json.encode(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "size": len(body),
                        "sha": hashlib.sha256(body).hexdigest(),
                        "port": echo.port,
                    }
                )
                self.send_response(echo.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _chunked(self) -> bytes:
                parts = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(parts)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for n in range(100_000 if "endless" in self.path else 3):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(b"data: %d\n\n" % n), b"data: %d\n\n" % n))
                        self.wfile.flush()
                        if n == 0:
                            echo.hold.wait(10)
                        if "endless" in self.path:
                            time.sleep(0.01)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    echo.cut_off.set()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        super().__init__(Handler)

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a process that died would."""
        super().stop()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.connections.clear()


# Ejections by the registry last long enough for a test to look at them.
# The gateway is the operator's own: its reports alone eject (without ACLs, a reporter is its address).
REGISTRY_ARGS = ("--expiry-window", "50ms", "--ejection-base", "30s", "--trusted-reporter", "127.0.0.1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("gateway") / "data", args=REGISTRY_ARGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(registry: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Round robin: every instance is tried in turn, so a test knows which ones a few requests reach.
    args = ("--timeout", "500ms", "--strategy", "round_robin")
    process = GatewayProcess(registry.addr, tmp_path_factory.mktemp("gateway-logs"), args)
    yield process
    process.stop()


@pytest.fixture
def echoes() -> Iterator[list[Echo]]:
    backends = [Echo() for _ in range(3)]
    yield backends
    for backend in backends:
        backend.stop()


def register(registry: Server, service: str, backends: list[Echo], gateway: GatewayProcess | None = None) -> None:
    """Register the backends as b0, b1, ... and wait until `gateway`'s view of the catalog has the service
    (a moment after the registry answers: the gateway follows the catalog with blocking queries)."""
    for i, backend in enumerate(backends):
        body = {"address": "127.0.0.1", "port": backend.port}
        registry.http.put(f"/v1/services/{service}/instances/b{i}", json=body).raise_for_status()
    if gateway is not None:
        wait_for(lambda: service in gateway.status()["services"])


def served_by(gateway: GatewayProcess, path: str, count: int, **kwargs: object) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        response = gateway.http.get(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        seen[response.headers["x-swarm-instance"]] += 1
    return seen


def test_requests_go_by_path_and_by_host_with_the_instance_named(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("web")
    register(registry, service, echoes, gateway)
    answer = gateway.http.post(f"/{service}/v1/items?x=1&y=%2F", content=b"hello", headers={"X-Custom": "1"})
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["path"] == "/v1/items?x=1&y=%2F" and seen["method"] == "POST" and seen["size"] == 5
    assert seen["headers"]["X-Custom"] == "1" and seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["Host"] == f"127.0.0.1:{seen['port']}"
    assert answer.headers["x-swarm-instance"] == f"b{[e.port for e in echoes].index(seen['port'])}"
    assert gateway.http.get(f"/{service}").json()["path"] == "/"
    by_host = gateway.http.get("/deep/path", headers={"Host": f"{service}.swarm"})
    assert by_host.json()["path"] == "/deep/path"
    assert served_by(gateway, f"/{service}/", 30) == {"b0": 10, "b1": 10, "b2": 10}


def test_the_gateways_own_errors_are_json_with_a_reason(registry: Server, gateway: GatewayProcess) -> None:
    missing = gateway.http.get("/no-such-service/x")
    assert missing.status_code == 404 and missing.json() == {"error": "no service 'no-such-service' in the registry"}
    assert missing.headers["x-swarm-gateway"] == "not_found"  # its own answer, not an instance's
    with Client(gateway.url) as mistaken, pytest.raises(NotSwarm, match="is a swarm gateway, not the registry"):
        mistaken.services()  # SWARM_ADDR set to the gateway's address
    assert gateway.http.get("/%20bad/x").status_code == 404
    service = unique("dead")
    registry.http.put(
        f"/v1/services/{service}/instances/d0", json={"address": "127.0.0.1", "port": 9}
    ).raise_for_status()
    wait_for(lambda: service in gateway.status()["services"])
    failed = gateway.http.get(f"/{service}/x")
    assert failed.status_code == 502 and failed.headers["x-swarm-instance"] == "d0"
    assert "d0 at 127.0.0.1:9: connection refused" in failed.json()["error"]


def test_a_stopped_backend_costs_no_request_and_is_ejected(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("failover")
    register(registry, service, echoes, gateway)
    served_by(gateway, f"/{service}/", 6)
    echoes[1].stop()
    assert "b1" not in served_by(gateway, f"/{service}/", 30)
    route = gateway.status()["routes"][service]
    assert route["ejected"] == ["b1"] and route["retries"] >= 1


def test_a_failing_backend_is_retried_elsewhere_ejected_and_the_registry_sees_it(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("failing")
    register(registry, service, echoes, gateway)
    echoes[2].status = 503
    assert "b2" not in served_by(gateway, f"/{service}/", 40)
    assert gateway.status()["routes"][service]["ejected"] == ["b2"]

    def ejected_by_the_registry() -> bool:
        found = {i["id"]: i for i in registry.http.get(f"/v1/services/{service}", params={"all": "true"}).json()}
        return "ejected" in found["b2"]

    wait_for(ejected_by_the_registry)  # from the gateway's reports
    assert [i["id"] for i in registry.http.get(f"/v1/services/{service}").json()] == ["b0", "b1"]


def test_a_hanging_backend_is_given_up_on_and_retried_elsewhere(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("hang")
    hole = BlackHole()
    try:
        port = int(hole.urls[0].rsplit(":", 1)[1].split("/")[0])
        registry.http.put(f"/v1/services/{service}/instances/hole", json={"address": "127.0.0.1", "port": port})
        register(registry, service, echoes[:1], gateway)
        started = time.monotonic()
        seen = served_by(gateway, f"/{service}/", 6)
        assert seen == {"b0": 6}
        assert time.monotonic() - started < 6  # at most a second (--timeout 1s) per request that met the hole
        assert hole.held >= 1
    finally:
        hole.stop()


def test_a_request_that_reached_no_instance_is_retried_even_if_not_idempotent(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("post")
    register(registry, service, echoes[:2], gateway)
    echoes[0].stop()  # refuses connections: nothing was sent
    for _ in range(6):
        answer = gateway.http.post(f"/{service}/", content=b"once")
        assert answer.status_code == 200 and answer.headers["x-swarm-instance"] == "b1"
    echoes[1].status = 503
    assert gateway.http.post(f"/{service}/", content=b"once").status_code == 503  # sent: not tried twice


def test_answers_stream_through_as_they_come(registry: Server, gateway: GatewayProcess, echoes: list[Echo]) -> None:
    service = unique("stream")
    register(registry, service, echoes[:1], gateway)
    echoes[0].hold.clear()  # the backend sends its first event, then waits
    with gateway.http.stream("GET", f"/{service}/stream") as response:
        lines = response.iter_lines()
        assert next(lines) == "data: 0"  # before the backend has finished
        assert response.headers["x-swarm-instance"] == "b0"
        echoes[0].hold.set()
        assert [line for line in lines if line] == ["data: 1", "data: 2"]


def test_request_bodies_stream_through_under_the_limit(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("upload")
    register(registry, service, echoes[:1], gateway)
    body = os.urandom(3 << 20)  # past what is read first: streamed

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = gateway.http.post(f"/{service}/up", content=chunks()).json()
    assert streamed["size"] == len(body) and streamed["sha"] == hashlib.sha256(body).hexdigest()
    whole = gateway.http.put(f"/{service}/up", content=body[:100_000], headers={"Expect": "100-continue"}).json()
    assert whole["size"] == 100_000 and whole["headers"]["Content-Length"] == "100000"
    assert "Expect" not in whole["headers"]  # answered by the gateway, which has the body already
    too_large = gateway.http.post(f"/{service}/up", content=b"x" * (9 << 20))
    assert too_large.status_code == 413 and "limit" in too_large.json()["error"]


def test_a_client_that_expects_100_continue_gets_it_and_a_chunked_body_is_refused_past_the_limit(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("expect")
    register(registry, service, echoes[:1], gateway)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as client:
        client.sendall(f"PUT /{service}/up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode())
        assert client.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        client.sendall(b"hello")
        received = b""
        while not received.endswith(b"}"):
            received += client.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and msgspec.json.decode(body)["size"] == 5
    chunk = b"x" * 65536
    too_large = gateway.http.post(f"/{service}/up", content=iter([chunk] * 200))  # 12.5 MiB, chunked
    assert too_large.status_code == 413 and "limit" in too_large.json()["error"]


def test_a_client_that_leaves_cancels_its_request_upstream(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("leave")
    register(registry, service, echoes[:1], gateway)
    with socket.create_connection(("127.0.0.1", gateway.port)) as client:
        client.sendall(f"GET /{service}/stream/endless HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while b"data: 1" not in received:
            received += client.recv(65536)
    assert echoes[0].cut_off.wait(10)  # the backend's next write failed: the gateway closed its side


def test_metrics_and_status_say_what_the_gateway_sees(
    registry: Server, gateway: GatewayProcess, echoes: list[Echo]
) -> None:
    service = unique("seen")
    register(registry, service, echoes[:1], gateway)
    served_by(gateway, f"/{service}/", 3)
    text = gateway.http.get("/metrics").text
    assert f'swarm_gateway_requests_total{{code="200",instance="b0",route="{service}"}} 3.0' in text
    assert "swarm_gateway_registry_up 1.0" in text
    assert f'swarm_gateway_time_to_first_byte_seconds_count{{route="{service}"}} 3.0' in text
    status = gateway.status()
    assert status["registry_stale"] is None and service in status["services"]
    assert status["routes"][service]["requests"] == 3


def test_the_gateway_keeps_serving_while_the_registry_is_away(tmp_path: Path, echoes: list[Echo]) -> None:
    registry = Server(tmp_path / "data", args=FAST_EXPIRY)
    registry.start()
    gateway = GatewayProcess(registry.addr, tmp_path)
    try:
        register(registry, "kept", echoes[:2], gateway)
        served_by(gateway, "/kept/", 4)
        registry.kill()
        wait_for(lambda: gateway.status()["registry_stale"] is not None)
        assert sum(served_by(gateway, "/kept/", 10).values()) == 10
        status = gateway.status()
        assert status["followed"]["kept"]["stale"] is not None and status["stale_since"] is not None
        assert "swarm_gateway_registry_up 0.0" in gateway.http.get("/metrics").text
        registry.start()
        register(registry, "kept", echoes)  # and a third instance, which the gateway must see
        wait_for(lambda: gateway.status()["registry_stale"] is None, 40)
        wait_for(lambda: "b2" in served_by(gateway, "/kept/", 10), 40)
    finally:
        gateway.stop()
        registry.stop()


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path: Path, registry: Server) -> None:
    runner = CliRunner()
    routes = tmp_path / "routes.toml"
    routes.write_text("[services.web]\nattempts = 'many'\n")
    cases = {
        ("--listen", "nowhere"): "--listen: expected HOST:PORT, got 'nowhere'",
        ("--strategy", "fastest"): "--strategy: one of round_robin",
        ("--connect-timeout", "soon"): "--connect-timeout: 'soon' is not a duration",
        ("--routes", str(routes)): f"{routes}: services.web.attempts: expected int, got str",
        ("--routes", str(tmp_path / "none.toml")): "--routes: cannot read",
        ("--listen", registry.addr): f"--listen: port {registry.port} on 127.0.0.1 is in use",
    }
    for args, error in cases.items():
        result = runner.invoke(app, ["gateway", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 1 and result.stderr.startswith(f"error: {error}"), (args, result.stderr)
        assert result.stderr.count("\n") == 1
    assert "[services.NAME] and [models]" in runner.invoke(app, ["gateway", "--help"], env={"COLUMNS": "200"}).stdout
