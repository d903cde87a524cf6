"""TLS and mTLS: HTTPS with a CA the tests make, client certificates required and mapped to an
identity, HTTPS checks verified against a CA, certificate files refused in one line, and the
server's limits and shutdown on the TLS path."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from bench.common import rss_mb
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from swarm_discovery import AsyncClient, Client
from swarm_discovery.certs import CertificateFileError
from swarm_discovery.cli.main import app
from swarm_discovery.errors import ApiError, Unreachable
from swarm_discovery.fronts.http.front import AsgiCall
from swarm_discovery.fronts.http.limits import Limits
from swarm_discovery.fronts.http.rsgi import RsgiCall
from swarm_discovery.fronts.http.tls import Peer, Relay, identity
from swarm_discovery.sdk.balancer import AllFailed
from tests.backends import HttpBackend
from tests.helpers import instance, unique, wait_for
from tests.pki import Authority, Issued
from tests.server import Server
from tests.test_cli_serve import one_line_error, serve
from tests.test_hostile import connect, long_reads, send_get

NODE = "gpu-node-7.provider-a.swarm"  # the identity in the provider's node certificate


class Pki:
    """The network's CA with a server and a node certificate; another CA that the server does not trust."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory / "ca", "swarm CA")
        self.server = self.ca.server()
        self.node = self.ca.issue("node", cn="gpu-node-7", dns=(NODE,), client=True)
        self.stranger_ca = Authority(directory / "stranger", "stranger CA")
        self.stranger = self.stranger_ca.issue("stranger", dns=("stranger.swarm",), client=True)

    def client_context(self, cert: Issued | None = None) -> ssl.SSLContext:
        return self.ca.client_context(cert)

    def serve_args(self, client_ca: bool = False) -> tuple[str, ...]:
        args = ("--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key))
        return (*args, "--tls-client-ca", str(self.ca.bundle)) if client_ca else args


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def started(directory: Path, args: tuple[str, ...], tls: ssl.SSLContext) -> Server:
    server = Server(directory / "data", args=("--max-connections", "1024", "--max-long-reads", "512", *args), tls=tls)
    server.start()
    return server


@pytest.fixture(scope="module")
def https_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """HTTPS (granian's TLS), whose checks trust the network's CA."""
    args = (*pki.serve_args(), "--check-ca", str(pki.ca.bundle))
    server = started(tmp_path_factory.mktemp("https"), args, pki.client_context())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """HTTPS requiring a client certificate from the network's CA."""
    server = started(tmp_path_factory.mktemp("mtls"), pki.serve_args(client_ca=True), pki.client_context(pki.node))
    yield server
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SWARM_ADDR", "SWARM_TOKEN", "SWARM_CACERT", "SWARM_CLIENT_CERT", "SWARM_CLIENT_KEY", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- HTTPS ---------------------------------------------------------------------------------


def test_the_sdk_registers_and_reads_over_https_with_swarm_cacert(https_server: Server, pki: Pki, env: Any) -> None:
    env.setenv("SWARM_ADDR", https_server.url)
    env.setenv("SWARM_CACERT", str(pki.ca.bundle))
    service = unique("https")
    with Client() as swarm:
        swarm.register(service, "a", address="10.0.0.1", port=8000)
        assert [i.id for i in swarm.instances(service)] == ["a"]

    async def read() -> list[str]:
        async with AsyncClient() as swarm:
            return [i.id for i in await swarm.instances(service)]

    assert asyncio.run(read()) == ["a"]
    assert "serving on https://" in Path(https_server.log.name).read_text()


def test_a_server_certificate_from_an_unknown_ca_is_refused_saying_what_to_set(https_server: Server, env: Any) -> None:
    with Client(https_server.url) as swarm, pytest.raises(Unreachable) as refused:
        swarm.services()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value) and "SWARM_CACERT" in str(refused.value)
    with Client(f"http://{https_server.addr}") as swarm, pytest.raises(Unreachable):
        swarm.services()  # plain HTTP to the HTTPS port gets no answer


def test_the_http_limits_hold_over_https(https_server: Server) -> None:
    http = https_server.http
    assert http.get("/v1/services", headers={"x-big": "a" * 100_000}).status_code == 431
    assert http.put("/v1/services/big/instances/a", json=instance(meta={"k": "v" * 70_000})).status_code == 413


# --- mTLS ----------------------------------------------------------------------------------


def test_mtls_answers_only_a_client_with_a_certificate_from_the_ca(mtls_server: Server, pki: Pki, env: Any) -> None:
    service = unique("mtls")
    with Client(mtls_server.url, cacert=str(pki.ca.bundle), cert=pki.node.pair) as swarm:
        swarm.register(service, "a", address="10.0.0.1", port=8000)
    for cert in (None, pki.stranger.pair):
        with Client(mtls_server.url, cacert=str(pki.ca.bundle), cert=cert) as swarm, pytest.raises(Unreachable):
            swarm.register(service, "b", address="10.0.0.2", port=8000)
    env.setenv("SWARM_CACERT", str(pki.ca.bundle))
    env.setenv("SWARM_CLIENT_CERT", str(pki.node.cert))
    env.setenv("SWARM_CLIENT_KEY", str(pki.node.key))
    with Client(mtls_server.url) as swarm:
        assert [i.id for i in swarm.instances(service)] == ["a"]  # b was never written


def test_a_node_certificate_acts_as_the_token_that_names_its_identity(pki: Pki, tmp_path: Path, env: Any) -> None:
    """ACLs over mTLS: a provider presenting its node certificate, and no token, has its token's rights."""
    args = (*pki.serve_args(client_ca=True), "--acl", "--acl-anonymous", "none")
    server = started(tmp_path, args, pki.client_context(pki.node))
    ca = str(pki.ca.bundle)
    other = pki.ca.issue("gpu-node-9", dns=("gpu-node-9.provider-b.swarm",), client=True)
    try:
        with Client(server.url, cacert=ca, cert=pki.node.pair) as swarm:
            management = swarm.bootstrap().token
        with Client(server.url, token=management, cacert=ca, cert=pki.node.pair) as operator:
            rules = {"services": {"provider-a-": "write"}, "nodes": {"gpu-node-7": "write"}}
            operator.create_token(rules, "provider a", identities=[NODE])
            with Client(server.url, cacert=ca, cert=pki.node.pair) as node:  # no token: its certificate speaks
                node.register("provider-a-llm", "a1", address="10.8.0.7", port=8000)
                with pytest.raises(ApiError) as refused:
                    node.register("provider-b-llm", "b1", address="10.8.0.7", port=8000)
                assert refused.value.status_code == 403
            with Client(server.url, cacert=ca, cert=other.pair) as stranger:  # a certificate no token names
                with pytest.raises(ApiError) as refused:
                    stranger.register("provider-a-llm", "a2", address="10.8.0.9", port=8000)
                assert refused.value.status_code == 401
            assert [i.id for i in operator.instances("provider-a-llm")] == ["a1"]
            assert [s.name for s in operator.services()] == ["provider-a-llm"]
    finally:
        server.stop()


def test_a_client_without_a_certificate_gets_no_answer_at_all(mtls_server: Server, pki: Pki) -> None:
    context = pki.client_context()
    raw = socket.create_connection(("127.0.0.1", mtls_server.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        try:
            tls.sendall(b"GET /v1/services HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = tls.recv(1024)
        except OSError as exc:  # TLS 1.3: the server's alert arrives at the first read
            answer = str(exc).encode()
    assert not answer.startswith(b"HTTP/"), answer


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if with_target.startswith("socket:["):
            inodes.add(with_target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_loopback_port_behind_the_relay_refuses_whoever_did_not_come_through_it(mtls_server: Server) -> None:
    (inner,) = listening_ports(mtls_server.worker_pid()) - {mtls_server.port}
    service = unique("bypass")
    with httpx.Client(base_url=f"http://127.0.0.1:{inner}") as direct:
        assert direct.put(f"/v1/services/{service}/instances/a", json=instance()).status_code == 403
        refused = direct.get("/v1/services")
        assert refused.status_code == 403 and "client certificate" in refused.json()["error"]
    assert service not in [s["name"] for s in mtls_server.http.get("/v1/services").json()]  # nothing was written


def test_the_cli_over_mtls_from_the_environment(mtls_server: Server, pki: Pki) -> None:
    service = unique("cli")
    env = {
        **os.environ,
        "SWARM_ADDR": mtls_server.url,
        "SWARM_CACERT": str(pki.ca.bundle),
        "SWARM_CLIENT_CERT": str(pki.node.cert),
        "SWARM_CLIENT_KEY": str(pki.node.key),
    }

    def swarm(*args: str, **changes: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "swarm_discovery", *args]
        return subprocess.run(command, env={**env, **changes}, capture_output=True, text=True, timeout=30)

    registered = swarm("register", service, "--id", "a", "--address", "10.0.0.1", "--port", "8000")
    assert registered.returncode == 0, registered.stderr
    assert '"id":"a"' in swarm("instances", service, "--json").stdout
    missing = swarm("services", SWARM_CACERT="/nonexistent/ca.pem")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: SWARM_CACERT: cannot read /nonexistent/ca.pem: No such file or directory"
    refused = swarm("services", SWARM_CLIENT_CERT="", SWARM_CLIENT_KEY="")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "SWARM_CLIENT_CERT and SWARM_CLIENT_KEY" in refused.stderr


# --- identities ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"cn": "node-a", "dns": ("a.swarm", "b.swarm"), "uris": ("spiffe://swarm/a",)}, "a.swarm"),
        ({"cn": "node-a", "uris": ("spiffe://swarm/a",), "emails": ("ops@a.example",)}, "spiffe://swarm/a"),
        ({"cn": "node-a", "emails": ("ops@a.example",), "ips": ("10.0.0.1",)}, "ops@a.example"),
        ({"cn": "node-a", "ips": ("10.0.0.1",)}, "node-a"),
        ({"cn": "node-a"}, "node-a"),
        ({"dns": ()}, None),
    ],
)
def test_the_identity_of_a_certificate(pki: Pki, names: dict[str, Any], expected: str | None) -> None:
    assert identity(pki.ca.build(ec.generate_private_key(ec.SECP256R1()), **names)) == expected


def test_an_rsgi_call_knows_the_relayed_peer() -> None:
    scope = SimpleNamespace(method="GET", path="/", query_string="", headers={}, client="127.0.0.1:40000")
    relayed = RsgiCall(scope, None, Peer("10.8.0.7", NODE))  # type: ignore[arg-type]
    assert relayed.identity == NODE and relayed.client == "10.8.0.7"
    plain = RsgiCall(scope, None)  # type: ignore[arg-type]
    assert plain.identity is None and plain.client == "127.0.0.1"


def test_an_asgi_call_reads_the_tls_extension(pki: Pki) -> None:
    pem = pki.node.cert.read_text()

    def call(extensions: dict[str, Any] | None) -> AsgiCall:
        scope = {"method": "GET", "path": "/", "headers": [], "client": ("10.8.0.7", 5000)}
        if extensions is not None:
            scope["extensions"] = extensions
        return AsgiCall(scope, None, "")  # type: ignore[arg-type]

    assert call({"tls": {"client_cert_chain": [pem], "client_cert_error": None}}).identity == NODE
    assert call({"tls": {"client_cert_chain": pem}}).identity == NODE  # one PEM string, as some servers give
    assert call({"tls": {"client_cert_chain": [pem], "client_cert_error": "expired"}}).identity is None
    assert call({"tls": {"client_cert_chain": []}}).identity is None
    assert call({"tls": {"client_cert_chain": ["not a certificate"]}}).identity is None
    assert call({}).identity is None and call(None).identity is None


def test_the_relay_says_who_is_at_the_other_end_of_each_connection(pki: Pki) -> None:
    """The relay over the standard asyncio loop (the server runs it on uvloop), with an upstream
    that answers each connection with what the relay recorded for it."""

    async def scenario() -> None:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            host, port = writer.get_extra_info("peername")[:2]
            peer = relay.peers.get(f"{host}:{port}")
            writer.write(f"{peer.identity} {peer.address}\n".encode() if peer else b"unknown\n")
            await writer.drain()
            await reader.read()  # until the relay closes
            writer.close()

        backend = await asyncio.start_server(upstream, "127.0.0.1", 0)
        listener = socket.create_server(("127.0.0.1", 0))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*pki.server.pair)
        context.load_verify_locations(cafile=str(pki.ca.bundle))
        context.verify_mode = ssl.CERT_REQUIRED
        relay = Relay(listener, backend.sockets[0].getsockname()[:2], context, Limits(client_timeout=5))
        relay.start(asyncio.get_running_loop())
        port = listener.getsockname()[1]
        cn_only = pki.ca.issue("cn-only", cn="node-b", client=True)
        for cert, expected in ((pki.node, f"{NODE} 127.0.0.1"), (cn_only, "node-b 127.0.0.1")):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context(cert), server_hostname="localhost"
            )
            assert (await reader.readline()).decode().strip() == expected
            writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=pki.client_context(), server_hostname="localhost"
        )
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if not await reader.readline():
                raise ConnectionResetError("closed")
        writer.close()
        await relay.close()
        backend.close()
        listener.close()
        assert relay.peers == {}

    asyncio.run(scenario())


# --- checks --------------------------------------------------------------------------------


def backend_tls(cert: Issued, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert.pair)
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def status(server: Server, service: str, iid: str) -> str:
    return str(server.http.get(f"/v1/services/{service}/instances/{iid}").json()["status"])


def check(url: str, **fields: object) -> dict[str, object]:
    return {"type": "http", "url": url, "interval": "100ms", "timeout": "2s", **fields}


def test_https_checks_verify_against_check_ca_and_tls_server_name(https_server: Server, pki: Pki) -> None:
    trusted = HttpBackend(tls=backend_tls(pki.ca.server("check-backend")))
    untrusted = HttpBackend(tls=backend_tls(pki.stranger_ca.server("stranger-backend")))
    named = HttpBackend(tls=backend_tls(pki.ca.issue("named-backend", dns=("backend.swarm.test",))))
    try:
        service = unique("checked")
        http = https_server.http
        for iid, spec in (
            ("trusted", check(trusted.url)),
            ("untrusted", check(untrusted.url, initial_status="passing")),
            ("unnamed", check(named.url, initial_status="passing")),
            ("named", check(named.url, tls_server_name="backend.swarm.test")),
        ):
            assert http.put(f"/v1/services/{service}/instances/{iid}", json=instance(checks=[spec])).status_code == 200
        consul_check = {"HTTP": named.url, "Interval": "100ms", "TLSServerName": "backend.swarm.test"}
        consul = {"Name": service, "ID": "consul", "Address": "127.0.0.1", "Port": named.port, "Check": consul_check}
        assert http.put("/v1/agent/service/register", json=consul).status_code == 200  # as Consul's API spells it
        for iid, expected in (
            ("trusted", "passing"),
            ("named", "passing"),
            ("consul", "passing"),
            ("untrusted", "critical"),
        ):
            wait_for(lambda iid=iid, expected=expected: status(https_server, service, iid) == expected)
        wait_for(lambda: status(https_server, service, "unnamed") == "critical")
        outputs = {
            iid: http.get(f"/v1/services/{service}/instances/{iid}/checks").json()[0]["output"]
            for iid in ("untrusted", "unnamed")
        }
        assert "certificate" in outputs["untrusted"].lower()
        assert "backend.swarm.test" not in outputs["unnamed"] and "certificate" in outputs["unnamed"].lower()
    finally:
        for backend in (trusted, untrusted, named):
            backend.stop()


def test_a_tls_server_name_must_be_a_host_name(https_server: Server) -> None:
    spec = check("https://127.0.0.1:1/health", tls_server_name="not a name")
    answer = https_server.http.put("/v1/services/bad-name/instances/a", json=instance(checks=[spec]))
    assert answer.status_code == 400 and "checks[0].tls_server_name" in answer.json()["error"]


# --- the balancer ----------------------------------------------------------------------------


def test_the_balancer_sends_https_with_the_client_certificate(https_server: Server, pki: Pki) -> None:
    backend = HttpBackend(tls=backend_tls(pki.ca.server("mesh-backend"), client_ca=pki.ca.bundle))
    try:
        service = unique("mesh")
        spec = instance(address="127.0.0.1", port=backend.port, protocol="https")
        assert https_server.http.put(f"/v1/services/{service}/instances/a", json=spec).status_code == 200
        with (
            Client(https_server.url, cacert=str(pki.ca.bundle), cert=pki.node.pair) as swarm,
            swarm.balancer(service, strategy="round_robin") as mesh,
        ):
            assert mesh.request("GET", "/health").status_code == 200
        with (
            Client(https_server.url, cacert=str(pki.ca.bundle)) as swarm,
            swarm.balancer(service, strategy="round_robin", attempts=1) as mesh,
            pytest.raises(AllFailed),
        ):
            mesh.request("GET", "/health")  # no client certificate: the instance refuses the handshake
    finally:
        backend.stop()


# --- certificate files -----------------------------------------------------------------------


def test_serve_names_the_tls_file_that_cannot_be_used(pki: Pki, tmp_path: Path) -> None:
    encrypted = pki.node.encrypted_key(b"secret")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, server_key = str(pki.server.cert), str(pki.server.key)
    # Run in this process (a start spends a second of CPU importing); --expiry-share is wrong too,
    # and checked after the TLS files, so that nothing can start serving here.
    guard = ("--http", "127.0.0.1:1", "--data-dir", str(tmp_path / "data"), "--expiry-share", "5")
    for args, expected in (
        (("--tls-cert", "/nonexistent.pem", "--tls-key", server_key), "--tls-cert: cannot read /nonexistent.pem"),
        (("--tls-cert", str(garbage), "--tls-key", server_key), "--tls-cert: " + str(garbage) + " holds no PEM"),
        (("--tls-cert", cert, "--tls-key", str(encrypted)), "is encrypted"),
        (("--tls-cert", cert), "--tls-cert: needs --tls-key"),
        (("--tls-key", server_key), "--tls-key: needs --tls-cert"),
        (("--tls-client-ca", str(pki.ca.bundle)), "--tls-client-ca: needs --tls-cert"),
        (("--tls-cert", cert, "--tls-key", server_key, "--tls-client-ca", str(garbage)), "--tls-client-ca: "),
        (("--check-ca", str(garbage)), "--check-ca: " + str(garbage) + " holds no PEM certificate"),
    ):
        result = CliRunner().invoke(app, ["serve", *guard, *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: ") and expected in result.output, (args, result.output)
    # and once as a process of its own
    mismatched = serve("--http", "127.0.0.1:1", "--tls-cert", cert, "--tls-key", str(pki.node.key))
    assert f"--tls-key: {pki.node.key} is not the private key of the certificate in {cert}" in one_line_error(
        mismatched
    )


def test_the_sdk_names_the_certificate_file_that_cannot_be_used(pki: Pki, env: Any) -> None:
    with pytest.raises(CertificateFileError, match=r"^cacert: cannot read /nonexistent"):
        Client(cacert="/nonexistent")
    with pytest.raises(CertificateFileError, match=r"^cert: .* is not the private key"):
        Client(cert=(str(pki.node.cert), str(pki.server.key)))
    env.setenv("SWARM_CLIENT_KEY", str(pki.node.key))
    with pytest.raises(CertificateFileError, match=r"^SWARM_CLIENT_KEY: needs SWARM_CLIENT_CERT"):
        Client()
    env.setenv("SWARM_CLIENT_CERT", str(pki.node.cert))
    Client().close()


def test_the_sdk_takes_a_passphrase_for_an_encrypted_key(pki: Pki) -> None:
    encrypted = pki.node.encrypted_key(b"secret")
    Client(cert=(str(pki.node.cert), str(encrypted), "secret")).close()
    with pytest.raises(CertificateFileError, match="is encrypted, and no passphrase"):
        Client(cert=(str(pki.node.cert), str(encrypted)))


# --- limits and stopping on the mTLS path ---------------------------------------------------


@pytest.fixture
def tight_mtls_server(pki: Pki, tmp_path: Path) -> Iterator[Server]:
    args = (*pki.serve_args(client_ca=True), "--client-timeout", "2s", "--max-connections", "16")
    server = Server(tmp_path / "data", args=(*args, "--max-long-reads", "12"), tls=pki.client_context(pki.node))
    server.start()
    yield server
    server.stop()


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    """Whether the server ends the connection within `within` seconds (what it still sent, read)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
    return False


def test_the_limits_hold_on_the_mtls_path(tight_mtls_server: Server, pki: Pki) -> None:
    http = tight_mtls_server.http
    assert http.get("/v1/services", headers={"x-big": "a" * 100_000}).status_code == 431
    assert http.put("/v1/services/big/instances/a", json=instance(meta={"k": "v" * 70_000})).status_code == 413
    address = ("127.0.0.1", tight_mtls_server.port)
    with socket.create_connection(address) as silent:  # never starts the handshake
        assert closed_by_server(silent)
    raw = socket.create_connection(address)
    with pki.client_context(pki.node).wrap_socket(raw, server_hostname="localhost") as idle:  # never asks
        assert closed_by_server(idle)


def test_connections_past_the_cap_wait_until_one_closes(pki: Pki, tmp_path: Path) -> None:
    context = pki.client_context(pki.node)
    args = (*pki.serve_args(client_ca=True), "--max-connections", "2", "--max-long-reads", "1")
    server = Server(tmp_path / "data", args=args, tls=context)
    server.start()
    server.http.close()
    watcher, idle = (httpx.Client(base_url=server.url, verify=context, timeout=10) for _ in range(2))
    try:
        with watcher.stream("GET", "/v1/watch", params={"service": "capped"}):  # holds one connection
            assert idle.get("/healthz").status_code == 200  # and this one is kept alive
            with socket.create_connection(("127.0.0.1", server.port)) as raw:  # the kernel queues it
                raw.settimeout(1.0)
                with pytest.raises(TimeoutError):  # but nobody takes it up while both are held
                    context.wrap_socket(raw, server_hostname="localhost")
            idle.close()
            with httpx.Client(base_url=server.url, verify=context, timeout=10) as late:
                assert late.get("/healthz").status_code == 200
    finally:
        watcher.close()
        idle.close()
        server.stop()


def test_mtls_watchers_that_never_read_are_bounded_and_cut_off(tight_mtls_server: Server, pki: Pki) -> None:
    """10 watchers over TLS that take nothing, 300 changes of 60 KB: each would have had 18 MB queued."""
    server = tight_mtls_server
    worker = server.worker_pid()
    context = pki.client_context(pki.node)
    stalled = []
    for _ in range(10):
        tls = context.wrap_socket(connect(server, receive_buffer=4096), server_hostname="localhost")
        send_get(tls, "/v1/watch?service=big")
        stalled.append(tls)
    wait_for(lambda: long_reads(server) == 10)
    before = rss_mb(worker)
    blob = ["x" * 1000] * 60
    for n in range(300):
        server.http.put(f"/v1/services/big/instances/i{n % 10}", json=instance(capabilities={"blob": blob, "n": n}))
    grown = rss_mb(worker) - before
    # About 55 MiB is the registry's own (history, encodings); the relay unpaced, it grew by about 150.
    assert grown < 100, f"resident memory grew by {grown:.0f} MiB"
    wait_for(lambda: long_reads(server) == 0)
    for tls in stalled:
        assert closed_by_server(tls)
        tls.close()


def test_sigterm_ends_mtls_watch_streams_and_stops_at_once(tight_mtls_server: Server, pki: Pki) -> None:
    context = pki.client_context(pki.node)
    with (
        httpx.Client(base_url=tight_mtls_server.url, verify=context, timeout=10) as watcher,
        watcher.stream("GET", "/v1/watch", params={"service": "stopping"}) as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines)
        assert tight_mtls_server.http.get("/healthz").status_code == 200  # leaves a connection kept alive
        tight_mtls_server.stop()  # fails the test unless the server exits within 5 s
        try:
            for _ in lines:  # the stream has ended: the rest comes out of what was received
                pass
        except httpx.HTTPError:
            pass  # or it was cut, which is the same to a watcher: it resumes with Last-Event-ID
