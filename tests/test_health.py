"""Active health checks against real HTTP, TCP and gRPC backends; node checks; mass-expiry protection."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import helpers
from tests.backends import GrpcBackend, HttpBackend, TcpBackend, self_signed
from tests.conftest import Server
from tests.helpers import ids, instance, put, unique


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    backend = HttpBackend()
    yield backend
    backend.stop()


wait_for = functools.partial(helpers.wait_for, seconds=5.0)  # health tests wait 5 s unless they say


def status_of(http: httpx.Client, service: str, iid: str) -> str:
    return str(http.get(f"/v1/services/{service}/instances/{iid}").json()["status"])


def http_check(url: str, **fields: object) -> dict[str, object]:
    return {"type": "http", "url": url, "interval": "200ms", "timeout": "300ms", **fields}


def test_http_check_detects_failure_and_recovery(shared_server: Server, http_backend: HttpBackend) -> None:
    http = shared_server.http
    service = unique("probe")
    put(http, service, "a", checks=[http_check(http_backend.url, failures_before_critical=2, success_before_passing=2)])
    assert status_of(http, service, "a") == "critical"  # until the first probes pass
    wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["a"])

    http_backend.status = 503
    took = wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == [])
    assert took <= 0.2 * 2 + 0.3 + 0.5  # interval x threshold + timeout, and slack for the poll
    checks = http.get(f"/v1/services/{service}/instances/a/checks").json()
    assert checks[0]["status"] == "critical" and "503" in checks[0]["output"]
    assert checks[0]["failures"] >= 2 and checks[0]["critical_since"] is not None

    http_backend.status = 200
    wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["a"])
    assert http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["successes"] >= 2


def test_a_steady_passing_http_check_changes_nothing(shared_server: Server, http_backend: HttpBackend) -> None:
    http = shared_server.http
    service = unique("steady")
    put(http, service, "a", checks=[http_check(http_backend.url)])
    wait_for(lambda: status_of(http, service, "a") == "passing")
    index = http.get(f"/v1/services/{service}").headers["x-swarm-index"]

    def last_checked() -> float:
        return float(http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["last_checked"])

    start = last_checked()
    wait_for(lambda: last_checked() >= start + 1.5)  # eight more probes, each with its own latency
    assert http.get(f"/v1/services/{service}").headers["x-swarm-index"] == index  # no change to show
    output = http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["output"]
    assert output == f"HTTP GET {http_backend.url}: 200 OK"


def test_slow_or_throttled_is_warning_and_stays_listed(shared_server: Server, http_backend: HttpBackend) -> None:
    http = shared_server.http
    service = unique("slow")
    put(http, service, "a", checks=[http_check(http_backend.url, warn_latency="50ms", timeout="1s")])
    wait_for(lambda: status_of(http, service, "a") == "passing")
    http_backend.delay = 0.12
    wait_for(lambda: status_of(http, service, "a") == "warning")
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]  # warning is still healthy
    assert "slow" in http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["output"]
    http_backend.delay = 0
    http_backend.status = 429
    wait_for(lambda: http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["output"].find("429") > 0)
    assert status_of(http, service, "a") == "warning"


def test_timeout_is_critical(shared_server: Server, http_backend: HttpBackend) -> None:
    http = shared_server.http
    service = unique("timeout")
    http_backend.delay = 1.0
    put(http, service, "a", checks=[http_check(http_backend.url, timeout="150ms", initial_status="passing")])
    wait_for(lambda: status_of(http, service, "a") == "critical")
    assert "timed out" in http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["output"]


def test_expect_status_and_headers(shared_server: Server, http_backend: HttpBackend) -> None:
    http = shared_server.http
    service = unique("expect")
    http_backend.status = 204
    put(
        http,
        service,
        "a",
        checks=[http_check(http_backend.url, expect_status=204, method="GET", headers={"X-Probe": "swarm"})],
    )
    wait_for(lambda: status_of(http, service, "a") == "passing")
    http_backend.status = 200  # a 2xx, but not the one expected
    wait_for(lambda: status_of(http, service, "a") == "critical")


def test_https_check_and_tls_skip_verify(shared_server: Server, tmp_path: Path) -> None:
    http = shared_server.http
    backend = HttpBackend(tls=self_signed(tmp_path))
    try:
        service = unique("tls")
        put(http, service, "trusting", checks=[http_check(backend.url, tls_skip_verify=True)])
        put(http, service, "verifying", checks=[http_check(backend.url, initial_status="passing")])
        wait_for(lambda: status_of(http, service, "trusting") == "passing")
        wait_for(lambda: status_of(http, service, "verifying") == "critical")
        output = http.get(f"/v1/services/{service}/instances/verifying/checks").json()[0]["output"]
        assert "certificate" in output.lower()
    finally:
        backend.stop()


def test_tcp_check(shared_server: Server) -> None:
    http = shared_server.http
    backend = TcpBackend()
    service = unique("tcp")
    put(http, service, "a", checks=[{"type": "tcp", "tcp": backend.target, "interval": "200ms", "timeout": "300ms"}])
    wait_for(lambda: status_of(http, service, "a") == "passing")
    backend.stop()
    wait_for(lambda: status_of(http, service, "a") == "critical")
    output = http.get(f"/v1/services/{service}/instances/a/checks").json()[0]["output"]
    assert "refused" in output.lower()
    backend.start()
    wait_for(lambda: status_of(http, service, "a") == "passing")
    backend.stop()


def test_grpc_check_overall_and_named_service(shared_server: Server) -> None:
    http = shared_server.http
    backend = GrpcBackend()
    try:
        backend.set("inference.v1.Generate", True)
        service = unique("grpc")
        put(
            http,
            service,
            "a",
            checks=[
                {"type": "grpc", "grpc": backend.target, "interval": "200ms", "timeout": "500ms"},
                {
                    "type": "grpc",
                    "grpc": f"{backend.target}/inference.v1.Generate",
                    "interval": "200ms",
                    "timeout": "500ms",
                },
            ],
        )
        wait_for(lambda: status_of(http, service, "a") == "passing")
        backend.set("inference.v1.Generate", False)
        wait_for(lambda: status_of(http, service, "a") == "critical")
        checks = http.get(f"/v1/services/{service}/instances/a/checks").json()
        assert [c["status"] for c in checks] == ["passing", "critical"]
        assert "NOT_SERVING" in checks[1]["output"]
    finally:
        backend.stop()


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ({"type": "tcp", "tcp": f"{'a' * 64}.example:80"}, "checks[0].tcp"),  # a DNS label has at most 63
        ({"type": "tcp", "tcp": "127.0.0.1:99999"}, "checks[0].tcp"),  # once probed port 34463
        ({"type": "http", "url": "http://10.0.0.1:99999/"}, "checks[0].url"),
        ({"type": "http", "url": "http://x/", "headers": {"X-Probe": "a\r\nInjected: 1"}}, "checks[0].headers"),
        ({"type": "http", "url": "http://x/", "headers": {"Bad Name": "v"}}, "checks[0].headers"),
    ],
    ids=["tcp-64-character-label", "tcp-port-out-of-range", "url-port-out-of-range", "crlf-header", "header-name"],
)
def test_a_check_that_could_never_be_probed_is_refused_at_registration(
    shared_server: Server, check: dict[str, object], field: str
) -> None:
    http = shared_server.http
    service = unique("unprobeable")
    response = http.put(f"/v1/services/{service}/instances/a", json=instance(checks=[check]))
    assert response.status_code == 400 and response.json()["error"].startswith(field), response.text
    assert http.get(f"/v1/services/{service}", params={"all": "true"}).json() == []


def test_deregister_critical_after(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("dca")
    dead = f"http://127.0.0.1:{TcpBackend().port}/health"  # nothing answers HTTP there once stopped
    put(http, service, "gone", checks=[http_check(dead, deregister_critical_after="600ms")])
    put(http, service, "stays")
    assert ids(http.get(f"/v1/services/{service}", params={"all": "true"})) == ["gone", "stays"]
    took = wait_for(lambda: ids(http.get(f"/v1/services/{service}", params={"all": "true"})) == ["stays"])
    assert took >= 0.5


def test_node_check_covers_its_instances(shared_server: Server) -> None:
    http = shared_server.http
    backend = TcpBackend()
    node, service = unique("node"), unique("onnode")
    response = http.put(
        f"/v1/nodes/{node}",
        json={
            "kind": "compute",
            "checks": [{"type": "tcp", "tcp": backend.target, "interval": "200ms", "timeout": "300ms"}],
        },
    )
    assert response.status_code == 200, response.text
    put(http, service, "a", node=node)
    put(http, service, "elsewhere")
    wait_for(lambda: http.get(f"/v1/nodes/{node}").json()["status"] == "passing")
    wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["a", "elsewhere"])
    backend.stop()
    wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["elsewhere"])
    assert status_of(http, service, "a") == "critical"
    assert http.get(f"/v1/nodes/{node}").json()["check_states"][0]["status"] == "critical"
    backend.start()
    wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["a", "elsewhere"])
    backend.stop()


@pytest.mark.parametrize(
    ("check", "names"),
    [
        ({"type": "http", "url": "ftp://x/"}, "checks[0].url"),
        ({"type": "tcp", "tcp": "nohost"}, "checks[0].tcp"),
        ({"type": "grpc", "grpc": "a b:1"}, "checks[0].grpc"),
        ({"type": "http", "url": "http://x/", "warn_latency": "fast"}, "checks[0].warn_latency"),
        ({"type": "http", "url": "http://x/", "failures_before_critical": -1}, "checks[0].failures_before_critical"),
        ({"type": "http", "url": "http://x/", "expect_status": 42}, "checks[0].expect_status"),
    ],
)
def test_bad_check_definitions(shared_server: Server, check: dict[str, object], names: str) -> None:
    response = shared_server.http.put(
        f"/v1/services/{unique('bad')}/instances/a", json={"address": "a", "port": 1, "checks": [check]}
    )
    assert response.status_code == 400 and response.json()["error"].startswith(names)


FLEET = 4  # services a fleet spreads over: a network cut silences many registrants at once


def fleet(http: httpx.Client, name: str, count: int, services: int = FLEET) -> None:
    """`count` instances with TTL checks, i0, i1, ... spread over services `name-0`, `name-1`, ..."""
    for i in range(count):
        put(http, f"{name}-{i % services}", f"i{i}", checks=[{"type": "ttl", "ttl": "600ms"}])


def beat(http: httpx.Client, name: str, members: range, services: int = FLEET) -> None:
    for i in members:
        http.put(f"/v1/services/{name}-{i % services}/instances/i{i}/heartbeat")


def listed(http: httpx.Client, name: str, services: int = FLEET) -> list[str]:
    """The healthy instances of a fleet, in instance order."""
    found = [i for s in range(services) for i in ids(http.get(f"/v1/services/{name}-{s}"))]
    return sorted(found, key=lambda i: int(i[1:]))


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data", args=("--expiry-window", "400ms", "--expiry-minimum", "10"))
    s.start()
    yield s
    s.stop()


def test_mass_expiry_is_held_then_released(guarded_server: Server) -> None:
    http = guarded_server.http
    fleet(http, "fleet", 12)
    beat(http, "fleet", range(12))
    time.sleep(1.5)  # nobody heartbeats: every TTL lapses together
    assert len(listed(http, "fleet")) == 12
    assert http.get("/v1/server").json()["expiry_protection"] is True
    assert "swarm_expiry_protection 1.0" in http.get("/metrics").text
    beat(http, "fleet", range(1, 12))  # heartbeats come back, except from i0
    wait_for(lambda: http.get("/v1/server").json()["expiry_protection"] is False)
    wait_for(lambda: listed(http, "fleet") == [f"i{i}" for i in range(1, 12)], seconds=3)


def test_one_registrants_silence_does_not_hold_expiry(guarded_server: Server) -> None:
    http = guarded_server.http
    fleet(http, "alone", 30, services=1)  # 30 instances of one service, none of which heartbeats
    took = wait_for(lambda: listed(http, "alone", services=1) == [], seconds=3)
    assert took < 0.6 + 0.4 + 1.0  # TTL + window, and slack
    assert http.get("/v1/server").json()["expiry_protection"] is False
    assert status_of(http, "alone-0", "i29") == "critical"


def test_a_lone_silent_instance_still_expires(guarded_server: Server) -> None:
    http = guarded_server.http
    fleet(http, "fleet", 12)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # all but i0 keep heartbeating
        beat(http, "fleet", range(1, 12))
        time.sleep(0.15)
    assert "i0" not in listed(http, "fleet")
    assert http.get("/v1/server").json()["expiry_protection"] is False


def test_few_instances_are_not_protected(guarded_server: Server) -> None:
    http = guarded_server.http
    fleet(http, "small", 5)  # all five stop: too few for the fault to be the server's
    wait_for(lambda: listed(http, "small") == [], seconds=3)
    assert http.get("/v1/server").json()["expiry_protection"] is False


def test_checks_start_afresh_after_restart(server: Server, http_backend: HttpBackend) -> None:
    http = server.http
    put(http, "svc", "a", checks=[http_check(http_backend.url, interval="300ms")])
    wait_for(lambda: status_of(http, "svc", "a") == "passing")
    server.kill()
    restarted = time.time()
    server.start()
    first = server.http.get("/v1/services/svc/instances/a/checks").json()[0]
    if "last_checked" in first:  # the first probe already ran: its counts start from zero again
        assert first["last_checked"] >= restarted and first["successes"] == 1
    else:
        assert (first["status"], first["output"]) == ("critical", "waiting for the first probe")
    wait_for(lambda: status_of(server.http, "svc", "a") == "passing")


def test_failing_probes_are_believed_even_en_masse(guarded_server: Server) -> None:
    http = guarded_server.http
    dead = f"http://127.0.0.1:{TcpBackend().port}/health"  # closed at once: connections are refused
    for i in range(12):
        put(http, "probed", f"i{i}", checks=[http_check(dead, initial_status="passing")])
    wait_for(lambda: ids(http.get("/v1/services/probed")) == [])
    assert http.get("/v1/server").json()["expiry_protection"] is False


def test_no_deregistration_before_checks_ran_after_restart(server: Server) -> None:
    http = server.http
    dead = f"http://127.0.0.1:{TcpBackend().port}/health"
    put(http, "svc", "a", checks=[http_check(dead, deregister_critical_after="1500ms")])
    time.sleep(1.0)  # critical for 1 s of its 1.5 s
    server.kill()
    time.sleep(0.8)
    restarted = time.monotonic()
    server.start()
    # The 1.5 s have passed since it went critical, but counting starts again with this process.
    assert ids(server.http.get("/v1/services/svc", params={"all": "true"})) == ["a"]
    wait_for(lambda: ids(server.http.get("/v1/services/svc", params={"all": "true"})) == [], seconds=5)
    assert time.monotonic() - restarted >= 1.4
