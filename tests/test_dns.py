"""The DNS front against a real server: dig and dnspython over UDP and TCP, HAProxy resolving through it."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest

from swarm_discovery.fronts.dns.names import Named, named
from tests.backends import HttpBackend
from tests.conftest import FAST_EXPIRY
from tests.helpers import put, unique, wait_for
from tests.server import Server, free_dns_port, free_port
from tests.test_cli_serve import one_line_error, serve


class Dns:
    """A server with `--dns`, and the questions the tests ask it."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = free_dns_port()
        self.server = Server(data_dir, args=(*FAST_EXPIRY, "--dns", f"127.0.0.1:{self.port}", *args))
        self.server.start()
        self.http = self.server.http

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False, edns: int = -1) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=edns)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(query, "127.0.0.1", port=self.port, timeout=5)

    def addresses(self, name: str, rdtype: str = "A") -> list[str]:
        return [record.address for record in records(self.ask(name, rdtype), rdtype)]

    def dig(self, *args: str) -> str:
        command = ["dig", "@127.0.0.1", "-p", str(self.port), "+time=5", "+tries=1", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def records(message: dns.message.Message, rdtype: str, section: str = "answer") -> list[object]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [record for rrset in getattr(message, section) if rrset.rdtype == wanted for record in rrset]


def soa_of(message: dns.message.Message) -> dns.rrset.RRset:
    (soa,) = [rrset for rrset in message.authority if rrset.rdtype == dns.rdatatype.SOA]
    return soa


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dns]:
    d = Dns(tmp_path_factory.mktemp("dns") / "data")
    yield d
    d.server.stop()


def unhealthy(http: httpx.Client, service: str, iid: str) -> None:
    response = http.put(f"/v1/services/{service}/instances/{iid}/maintenance", json={"enable": True, "reason": "x"})
    assert response.status_code == 200, response.text


# --- names ------------------------------------------------------------------------------------


def test_names() -> None:
    assert named(("llm", "service")) == Named("service", service="llm")
    assert named(("vllm", "llm", "service")) == Named("service", service="llm", tag="vllm")
    assert named(("a", "b", "llm", "service")) == Named("service", service="llm", tag="a.b")
    assert named(("_llm", "_tcp", "service")) == Named("service", service="llm")
    assert named(("_llm", "_vllm", "service")) == Named("service", service="llm", tag="vllm")
    assert named(("llm", "service", "eu-west-1a")) == Named("service", service="llm", near="eu-west-1a")
    assert named(("gpu-node-7", "node")) == Named("node", node="gpu-node-7")
    assert named(("0a080007", "addr")) == Named("addr", address="10.8.0.7")
    assert named(()).kind == "apex"
    for nothing in [("service",), ("llm",), ("node",), ("zz", "addr"), ("_", "_tcp", "service"), ("a", "b", "c")]:
        assert named(nothing).kind == "nothing", nothing


# --- answers ----------------------------------------------------------------------------------


def test_a_records_are_the_healthy_instances_in_turns(served: Dns) -> None:
    service = unique("dns-a")
    for i in range(1, 4):
        put(served.http, service, f"i{i}", address=f"10.0.0.{i}")
    put(served.http, service, "sick", address="10.0.0.9")
    unhealthy(served.http, service, "sick")
    answer = served.ask(f"{service}.service.swarm")
    assert answer.rcode() == dns.rcode.NOERROR and answer.flags & dns.flags.AA
    assert sorted(served.addresses(f"{service}.service.swarm")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert all(rrset.ttl == 0 for rrset in answer.answer)  # Consul's default
    firsts = {served.addresses(f"{service}.service.swarm")[0] for _ in range(3)}
    assert firsts == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}  # each instance leads in its turn


def test_dig_reads_a_srv_tags_and_nodes(served: Dns) -> None:
    service, node = unique("dig"), unique("gpu-node")
    served.http.put(f"/v1/nodes/{node}", json={"address": "10.8.0.7"}).raise_for_status()
    put(served.http, service, "a", address="10.8.0.7", port=8000, tags=["vllm"], node=node, weight=50)
    put(served.http, service, "b", address="10.8.0.9", port=9000)
    assert sorted(served.dig("+short", f"{service}.service.swarm").split()) == ["10.8.0.7", "10.8.0.9"]
    assert served.dig("+short", f"vllm.{service}.service.swarm").split() == ["10.8.0.7"]
    assert served.dig("+short", f"{node}.node.swarm").split() == ["10.8.0.7"]
    srv = served.dig(f"_{service}._tcp.service.swarm", "SRV")
    assert f"_{service}._tcp.service.swarm. 0 IN SRV 1 50 8000 0a080007.addr.swarm." in " ".join(srv.split())
    assert "0a080007.addr.swarm. 0 IN A 10.8.0.7" in " ".join(srv.split())  # the additional section
    assert served.dig("+short", f"_{service}._vllm.service.swarm", "SRV").split() == [
        "1",
        "50",
        "8000",
        "0a080007.addr.swarm.",
    ]


def test_srv_names_targets_with_their_addresses(served: Dns) -> None:
    service = unique("srv")
    put(served.http, service, "v4", address="10.0.0.4", port=8004)
    put(served.http, service, "v6", address="fd00::6", port=8006)
    put(served.http, service, "host", address="llm.example.com", port=8007)
    answer = served.ask(f"{service}.service.swarm", "SRV")
    targets = {record.port: record.target.to_text() for record in records(answer, "SRV")}  # type: ignore[attr-defined]
    assert targets == {
        8004: "0a000004.addr.swarm.",
        8006: "fd000000000000000000000000000006.addr.swarm.",
        8007: "llm.example.com.",
    }
    assert [r.address for r in records(answer, "A", "additional")] == ["10.0.0.4"]  # type: ignore[attr-defined]
    assert [r.address for r in records(answer, "AAAA", "additional")] == ["fd00::6"]  # type: ignore[attr-defined]
    assert served.addresses("0a000004.addr.swarm") == ["10.0.0.4"]
    assert served.addresses(f"{service}.service.swarm", "AAAA") == ["fd00::6"]
    # a host name is left out of address answers while some instance has an IP address
    assert served.addresses(f"{service}.service.swarm") == ["10.0.0.4"]


def test_host_names_become_a_cname(served: Dns) -> None:
    service = unique("cname")
    put(served.http, service, "a", address="llm-a.example.com")
    put(served.http, service, "b", address="llm-b.example.com")
    targets = set()
    for _ in range(2):
        answer = served.ask(f"{service}.service.swarm")
        (cname,) = records(answer, "CNAME")
        targets.add(cname.target.to_text())  # type: ignore[attr-defined]
    assert targets == {"llm-a.example.com.", "llm-b.example.com."}


def test_nxdomain_and_nodata_carry_the_soa(served: Dns) -> None:
    service = unique("neg")
    put(served.http, service, "a", address="10.0.0.1")
    for name in (f"{unique('nosuch')}.service.swarm", "what.ever.swarm", f"nope.{service}.service.swarm"):
        answer = served.ask(name)
        assert answer.rcode() == dns.rcode.NXDOMAIN and not answer.answer, name
        assert soa_of(answer).name.to_text() == "swarm."
    nodata = served.ask(f"{service}.service.swarm", "AAAA")  # the name exists, with IPv4 only
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert soa_of(nodata)[0].mname.to_text() == "ns.swarm."  # type: ignore[attr-defined]
    assert served.ask(f"{service}.service.swarm", "TXT").rcode() == dns.rcode.NOERROR
    assert served.ask(f"{unique('gone')}.node.swarm").rcode() == dns.rcode.NXDOMAIN
    soa = served.ask("swarm", "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and records(soa, "SOA")
    assert served.ask("example.com").rcode() == dns.rcode.REFUSED  # no recursion here
    unhealthy(served.http, service, "a")
    assert served.ask(f"{service}.service.swarm").rcode() == dns.rcode.NXDOMAIN  # no healthy instance: Consul's


def test_a_change_is_in_the_next_answer(served: Dns) -> None:
    service = unique("change")
    name = f"{service}.service.swarm"
    assert served.ask(name).rcode() == dns.rcode.NXDOMAIN
    put(served.http, service, "a", address="10.0.0.1")
    assert served.addresses(name) == ["10.0.0.1"]
    put(served.http, service, "b", address="10.0.0.2")
    assert sorted(served.addresses(name)) == ["10.0.0.1", "10.0.0.2"]
    unhealthy(served.http, service, "a")
    assert served.addresses(name) == ["10.0.0.2"]
    served.http.delete(f"/v1/services/{service}/instances/b").raise_for_status()
    assert served.ask(name).rcode() == dns.rcode.NXDOMAIN


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(served: Dns) -> None:
    service = unique("big")
    for i in range(100):
        put(served.http, service, f"i{i}", address=f"10.1.0.{i}")
    name = f"{service}.service.swarm"
    plain = served.ask(name)  # no EDNS0: 512 bytes
    assert plain.flags & dns.flags.TC and 0 < len(records(plain, "A")) < 100
    assert len(plain.to_wire()) <= 512
    edns = served.ask(name, edns=0)
    assert edns.flags & dns.flags.TC and len(records(plain, "A")) < len(records(edns, "A")) < 100
    whole = served.ask(name, tcp=True)
    assert not whole.flags & dns.flags.TC and len(records(whole, "A")) == 100
    out = served.dig("+noedns", name)
    assert "Truncated, retrying in TCP mode" in out and "ANSWER: 100" in out
    srv = served.ask(name, "SRV", tcp=True)
    assert len(records(srv, "SRV")) == 100 and len(records(srv, "A", "additional")) == 100


def test_near_puts_the_zone_first(served: Dns) -> None:
    service = unique("near")
    put(served.http, service, "us", address="10.0.0.1", location={"region": "us-east", "zone": "us-east-1a"})
    put(served.http, service, "eu", address="10.0.0.2", location={"region": "eu-west", "zone": "eu-west-1a"})
    for _ in range(3):
        assert served.addresses(f"{service}.service.eu-west-1a.swarm") == ["10.0.0.2", "10.0.0.1"]
        assert served.addresses(f"{service}.service.us-east.swarm") == ["10.0.0.1", "10.0.0.2"]


def test_names_are_read_in_any_case_and_echoed_as_asked(served: Dns) -> None:
    service = unique("case")
    put(served.http, service, "a", address="10.0.0.1")
    asked = f"{service.upper()}.SerVice.SWARM."
    answer = served.ask(asked)
    assert answer.question[0].name.to_text() == asked and records(answer, "A")
    assert answer.answer[0].name.to_text() == asked


# --- hostile input ----------------------------------------------------------------------------


def question(name: bytes, rdtype: int = 1, rdclass: int = 1) -> bytes:
    return name + struct.pack("!HH", rdtype, rdclass)


def header(count: int = 1, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", random.randrange(65536), flags, count, 0, 0, 0)


def test_hostile_datagrams_get_an_error_or_nothing_and_the_server_goes_on(served: Dns) -> None:
    service = unique("hostile")
    put(served.http, service, "a", address="10.0.0.1")
    rng = random.Random(7)
    garbage = [rng.randbytes(rng.randrange(0, 600)) for _ in range(300)]
    garbage += [header(), header(0), header(2) + question(b"\x01a\x00") * 2]
    garbage += [header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1)]  # a name that points at itself
    garbage += [header() + question(b"\x3f" + b"a" * 63 + b"\x00") * 40]  # long, and trailing junk
    garbage += [header() + question(b"\x40" + b"a" * 64 + b"\x00")]  # a label over 63
    garbage += [header(flags=0x8100) + question(b"\x01a\x05swarm\x00")]  # a reply: never answered
    garbage += [header() + b"\x00" * 4000, header() + b"\x00" * 5000]  # trailing junk; longer than a query may be
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in garbage:
            udp.sendto(packet, ("127.0.0.1", served.port))
        udp.settimeout(0.5)
        ids = {packet[:2] for packet in garbage}
        try:
            while reply := udp.recv(4096):
                assert reply[2] & 0x80 and reply[:2] in ids  # a reply, to one of them
        except TimeoutError:
            pass
    assert served.addresses(f"{service}.service.swarm") == ["10.0.0.1"]


def test_odd_questions_get_their_error(served: Dns) -> None:
    def rcode(wire: bytes) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(wire, ("127.0.0.1", served.port))
            return dns.message.from_wire(udp.recv(4096)).rcode()

    name = b"\x03llm\x07service\x05swarm\x00"
    assert rcode(header(2) + question(name) * 2) == dns.rcode.FORMERR
    assert rcode(header(flags=0x2800) + question(name)) == dns.rcode.NOTIMP  # an UPDATE
    assert rcode(header() + question(name, rdclass=3)) == dns.rcode.REFUSED  # CHAOS
    assert rcode(header() + question(name, rdtype=252)) == dns.rcode.REFUSED  # AXFR
    query = dns.message.make_query("llm.service.swarm", "A", use_edns=1)
    assert rcode(query.to_wire()) == dns.rcode.BADVERS


def test_tcp_is_bounded_and_survives_garbage(served: Dns) -> None:
    service = unique("tcp")
    put(served.http, service, "a", address="10.0.0.1")
    wire = dns.message.make_query(f"{service}.service.swarm", "A").to_wire()

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", served.port), timeout=5)

    def closed(sock: socket.socket) -> bool:
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    with connect() as sock:  # pipelined: three answers in order
        sock.sendall((struct.pack("!H", len(wire)) + wire) * 3)
        received = b""
        while received.count(wire[:2]) < 3:
            received += sock.recv(65536)
    with connect() as sock:
        sock.sendall(struct.pack("!H", 60000) + b"x" * 100)  # longer than any query may be
        assert closed(sock)
    with connect() as sock:
        sock.sendall(struct.pack("!H", 5) + b"short")  # not even a header
        assert closed(sock)
    held = [connect() for _ in range(16)]  # the most one client may hold
    try:
        with connect() as extra:
            assert closed(extra)
    finally:
        for sock in held:
            sock.close()
    assert served.ask(f"{service}.service.swarm", tcp=True).answer


# --- settings, access control, the command line -----------------------------------------------


def test_domain_ttl_and_anonymous_access(tmp_path: Path) -> None:
    d = Dns(tmp_path / "data", "--dns-domain", "Discovery.Internal.", "--dns-ttl", "30s", "--acl")
    try:
        management = d.http.put("/v1/acl/bootstrap").json()["token"]
        d.http.headers["Authorization"] = f"Bearer {management}"
        put(d.http, "web", "a", address="10.0.0.1")
        answer = d.ask("web.service.discovery.internal")
        assert [rrset.ttl for rrset in answer.answer] == [30]
        assert d.ask("web.service.swarm").rcode() == dns.rcode.REFUSED
        negative = d.ask("nope.service.discovery.internal")
        assert soa_of(negative).ttl == 30 and soa_of(negative)[0].minimum == 30  # type: ignore[attr-defined]
    finally:
        d.server.stop()
    closed = Dns(tmp_path / "closed", "--acl", "--acl-anonymous", "none")
    try:
        management = closed.http.put("/v1/acl/bootstrap").json()["token"]
        closed.http.headers["Authorization"] = f"Bearer {management}"
        put(closed.http, "web", "a", address="10.0.0.1")
        assert closed.ask("web.service.swarm").rcode() == dns.rcode.NXDOMAIN  # DNS asks as nobody
    finally:
        closed.server.stop()


def test_serve_mistakes_with_dns(served: Dns, tmp_path: Path) -> None:
    http = f"127.0.0.1:{free_port()}"
    data = str(tmp_path / "data")
    line = one_line_error(serve("--http", http, "--data-dir", data, "--dns", f"127.0.0.1:{served.port}"))
    assert f"--dns: port {served.port} on 127.0.0.1 is in use" in line
    assert "--dns: expected HOST:PORT" in one_line_error(serve("--dns", "8600"))
    assert "--dns-domain" in one_line_error(serve("--dns", "127.0.0.1:8600", "--dns-domain", "a..b"))
    assert "--dns-ttl" in one_line_error(serve("--dns", "127.0.0.1:8600", "--dns-ttl", "1.5s"))


# --- HAProxy ----------------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def test_haproxy_follows_the_healthy_instances(served: Dns, tmp_path: Path) -> None:
    service = unique("web")
    backends = [HttpBackend() for _ in range(3)]
    listen = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    stats socket {tmp_path}/stats.sock
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
resolvers swarm
    nameserver swarm 127.0.0.1:{served.port}
    accepted_payload_size 1232
    resolve_retries 1
    timeout resolve 100ms
    timeout retry 100ms
    hold valid 100ms
    hold obsolete 100ms
    hold nx 100ms
    hold other 100ms
frontend web
    bind 127.0.0.1:{listen}
    default_backend instances
backend instances
    balance roundrobin
    server-template web 5 _{service}._tcp.service.swarm resolvers swarm init-addr none
""")
    for i, backend in enumerate(backends[:2]):
        put(served.http, service, f"w{i}", address="127.0.0.1", port=backend.port)
    proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def reached(expected: set[int]) -> bool:
            """Whether the next 12 requests reach exactly the backends `expected` (by index)."""
            before = [b.hits for b in backends]
            for _ in range(12):
                try:
                    httpx.get(f"http://127.0.0.1:{listen}/", timeout=2)
                except httpx.HTTPError:
                    return False
            return {i for i, b in enumerate(backends) if b.hits > before[i]} == expected

        wait_for(lambda: reached({0, 1}), seconds=20)
        unhealthy(served.http, service, "w0")
        wait_for(lambda: reached({1}), seconds=20)
        put(served.http, service, "w2", address="127.0.0.1", port=backends[2].port)
        wait_for(lambda: reached({1, 2}), seconds=20)
    finally:
        proxy.terminate()
        proxy.wait(10)
        for backend in backends:
            backend.stop()
