"""Sharing what probes can reach: bounds per target and per registrant, the probe rate, and the
operator's allow and deny lists, against a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import BlackHole, HttpBackend, TcpBackend
from tests.conftest import FAST_EXPIRY
from tests.helpers import put, unique
from tests.server import Server
from tests.test_health import http_check, status_of, wait_for


def checks_of(http: httpx.Client, service: str, iid: str) -> list[dict[str, object]]:
    response = http.get(f"/v1/services/{service}/instances/{iid}/checks")
    assert response.status_code == 200, response.text
    return list(response.json())


def test_one_registrant_cannot_starve_anothers_checks(server: Server, http_backend: HttpBackend) -> None:
    http = server.http
    hole = BlackHole(ports=4)
    try:
        # 33 x 16 = 528 checks that each hold a connection for 30 s: more than a shared 512 pool.
        checks = [
            {"type": "http", "url": f"{hole.urls[c % 4]}?c={c}", "interval": "300ms", "timeout": "60s"}
            for c in range(16)
        ]
        for i in range(33):
            put(http, "hog", f"h{i}", checks=checks)
        wait_for(lambda: hole.held >= 256)
        put(http, "victim", "v", checks=[http_check(http_backend.url)])
        # Consecutive successes: one probe that waited for a connection and timed out would reset them.
        wait_for(lambda: checks_of(http, "victim", "v")[0].get("successes", 0) >= 6)
        assert status_of(http, "victim", "v") == "passing"
        assert hole.held == 256  # the hog's share: --probe-per-registrant
        outputs = {str(c["output"]) for i in range(33) for c in checks_of(http, "hog", f"h{i}")}
        assert "probe skipped: service hog has 256 probes in flight (--probe-per-registrant)" in outputs
        assert 'swarm_probes_total{result="skipped",type="http"}' in http.get("/metrics").text
    finally:
        hole.stop()


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    backend = HttpBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def fenced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Probes may reach 127.0.0.1 only, 20 a second per registrant, 8 at a time per target."""
    fence = ("--probe-allow", "127.0.0.1/32", "--probe-allow", "127.0.0.2/32", "--probe-deny", "127.0.0.2")
    limits = ("--probe-rate", "20", "--probe-per-target", "8")
    s = Server(tmp_path_factory.mktemp("fenced") / "data", args=(*FAST_EXPIRY, *fence, *limits))
    s.start()
    yield s
    s.stop()


def test_denied_targets_fail_at_once(fenced: Server, http_backend: HttpBackend) -> None:
    http = fenced.http
    service, port = unique("fenced"), TcpBackend().port
    targets = [
        http_check(http_backend.url),
        {"type": "tcp", "tcp": f"127.0.0.2:{port}", "interval": "200ms"},
        http_check(f"http://127.0.0.3:{port}/"),
        {"type": "grpc", "grpc": f"[::ffff:7f00:2]:{port}", "interval": "200ms"},  # 127.0.0.2, as IPv6
        http_check(f"{fenced.url}/v1/acl/bootstrap", method="PUT"),
        {"type": "tcp", "tcp": f"localhost:{http_backend.port}", "interval": "200ms"},  # ::1 is not allowed
    ]
    put(http, service, "a", checks=[{**t, "initial_status": "passing"} for t in targets])
    wait_for(lambda: all(c.get("last_checked") for c in checks_of(http, service, "a")))
    got = [(c["status"], c["output"]) for c in checks_of(http, service, "a")]
    assert got[0][0] == "passing" and got[5] == ("passing", f"TCP connect localhost:{http_backend.port}: success")
    assert got[1] == ("critical", "target denied by --probe-deny 127.0.0.2/32: 127.0.0.2")
    assert got[2] == ("critical", "target denied: 127.0.0.3 is outside every --probe-allow")
    assert got[3] == ("critical", "target denied by --probe-deny 127.0.0.2/32: 127.0.0.2")
    assert got[4] == ("critical", f"target denied: 127.0.0.1:{fenced.port} is this server's own address")


def test_probes_are_rate_limited_per_registrant(fenced: Server) -> None:
    http = fenced.http
    busy, other = HttpBackend(), HttpBackend()
    try:
        service = unique("busy")
        put(http, service, "a", checks=[http_check(f"{busy.url}?c={c}", interval="100ms") for c in range(16)])
        put(http, unique("calm"), "b", checks=[http_check(other.url)])
        wait_for(lambda: busy.hits >= 30)  # the first second's burst is spent
        before, started = busy.hits, time.monotonic()
        time.sleep(1.0)  # a rate needs a window
        rate = (busy.hits - before) / (time.monotonic() - started)
        assert rate <= 20 * 1.3  # 160 a second asked for; 20 a second allowed
        wait_for(lambda: other.hits >= 5)  # the other registrant's probes are not in that budget
        skipped = [c["output"] for c in checks_of(http, service, "a") if "skipped" in str(c["output"])]
        assert f"probe skipped: service {service} is over 20 probes/s (--probe-rate)" in skipped
    finally:
        busy.stop()
        other.stop()


def test_probes_in_flight_per_target_are_bounded(fenced: Server) -> None:
    hole = BlackHole()
    try:
        checks = [http_check(f"{hole.urls[0]}?c={c}", timeout="30s") for c in range(4)]
        for _ in range(4):  # four registrants, four checks each, one target
            put(fenced.http, unique("queue"), "a", checks=checks)
        wait_for(lambda: hole.held >= 8)
        time.sleep(0.5)  # the checks' next rounds come and are skipped
        assert hole.held == 8
    finally:
        hole.stop()


def test_serve_refuses_a_bad_network(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "swarm_discovery", "serve", "--data-dir", str(tmp_path), "--http", "127.0.0.1:1"]
    done = subprocess.run([*serve, "--probe-deny", "10.0.0.0/33"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "--probe-deny: expected a CIDR" in done.stderr
