"""The SDK balancer against real HTTP backends and a real server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from swarm_discovery import AsyncClient, Client
from swarm_discovery.records import Report, ReportsAccepted
from swarm_discovery.sdk.balancer import AllFailed, Balancer, NoInstance
from tests.backends import HttpBackend, Quiet, Served
from tests.conftest import FAST_EXPIRY, Server
from tests.helpers import ids, put, unique, wait_for


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The module's server, trusting this host's reports as an operator trusts its own balancers:
    one balancer's reports eject for everyone (from untrusted clients it takes two that agree)."""
    s = Server(tmp_path_factory.mktemp("balancer") / "data", args=(*FAST_EXPIRY, "--trusted-reporter", "127.0.0.1"))
    s.start()
    yield s
    s.stop()


class Fleet:
    """Backends registered as instances of one service; each backend counts its hits."""

    def __init__(self, server: Server, count: int, **fields: object) -> None:
        self.service = unique("fleet")
        self.backends = [HttpBackend() for _ in range(count)]
        for i, backend in enumerate(self.backends):
            put(server.http, self.service, f"b{i}", address="127.0.0.1", port=backend.port, **fields)

    def hits(self) -> list[int]:
        return [b.hits for b in self.backends]

    def stop(self) -> None:
        for backend in self.backends:
            backend.stop()


@pytest.fixture
def fleet(shared_server: Server) -> Iterator[Fleet]:
    f = Fleet(shared_server, 3)
    yield f
    f.stop()


def run_threads(count: int, work: object) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_killed_backend_costs_no_idempotent_request(shared_server: Server, fleet: Fleet) -> None:
    with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="round_robin") as lb:
        codes: list[int] = []
        for n in range(60):
            if n == 20:
                fleet.backends[1].stop()
                hits_at_kill = fleet.backends[1].hits
            codes.append(lb.request("GET", "/health").status_code)
        assert codes == [200] * 60
        assert fleet.backends[1].hits == hits_at_kill  # refused connections reach nobody
        stats = lb.stats()
        assert stats["retries"] == 1  # one failed attempt, then it was ejected at once
        assert stats["ejected"] == ["b1"]


def test_least_loaded_avoids_a_slow_backend(shared_server: Server, fleet: Fleet) -> None:
    fleet.backends[0].delay = 0.2
    with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="least_loaded") as lb:

        def work() -> None:
            for _ in range(25):
                assert lb.request("GET", "/health").status_code == 200

        run_threads(8, work)
    slow, *fast = fleet.hits()
    assert slow < 0.15 * sum(fleet.hits()) and all(f > 2 * slow for f in fast)


def test_a_failing_backend_is_ejected_reported_and_comes_back(shared_server: Server, fleet: Fleet) -> None:
    http = shared_server.http
    fleet.backends[2].status = 503
    with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="round_robin") as lb:
        codes = [lb.request("GET", "/health").status_code for _ in range(40)]
        assert codes == [200] * 40  # 503s were retried on the others
        assert "b2" in lb.stats()["ejected"]
        # The reports reach the server, which ejects it for everyone.
        deadline = time.monotonic() + 5
        while "b2" in ids(http.get(f"/v1/services/{fleet.service}")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        shown = {i["id"]: i for i in http.get(f"/v1/services/{fleet.service}", params={"all": "true"}).json()}
        assert shown["b2"]["ejected"]["reason"] and shown["b2"]["status"] == "passing"
        catalog = next(s for s in http.get("/v1/services").json() if s["name"] == fleet.service)
        assert (catalog["instances"], catalog["healthy"]) == (3, 2)
        fleet.backends[2].status = 200
        deadline = time.monotonic() + 10  # the server's ejection here lasts 1 s
        while "b2" not in ids(http.get(f"/v1/services/{fleet.service}")):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_consistent_hash_keeps_keys_when_another_instance_leaves(shared_server: Server) -> None:
    fleet = Fleet(shared_server, 4)
    try:
        with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="consistent_hash") as lb:

            def owner(key: str) -> int:
                before = fleet.hits()
                lb.request("GET", "/health", key=key)
                return next(i for i, (a, b) in enumerate(zip(before, fleet.hits(), strict=True)) if a != b)

            keys = [f"session-{k}" for k in range(40)]
            first = {k: owner(k) for k in keys}
            assert first == {k: owner(k) for k in keys}  # sticky
            leaving = 3 if sum(v == 3 for v in first.values()) < 20 else 2
            index = int(shared_server.http.get(f"/v1/services/{fleet.service}").headers["x-swarm-index"])
            shared_server.http.delete(f"/v1/services/{fleet.service}/instances/b{leaving}")
            shared_server.http.get(f"/v1/services/{fleet.service}", params={"index": index, "wait": "2s"})
            deadline = time.monotonic() + 5
            while lb.stats()["instances"] != 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            after = {k: owner(k) for k in keys}
            assert all(after[k] == first[k] for k in keys if first[k] != leaving)
    finally:
        fleet.stop()


def test_a_pool_of_two_can_eject_one_and_a_lone_instance_is_still_used(shared_server: Server) -> None:
    pair = Fleet(shared_server, 2)
    try:
        pair.backends[0].status = 500
        with Client(shared_server.addr) as client, client.balancer(pair.service, strategy="round_robin") as lb:
            assert [lb.request("GET", "/health").status_code for _ in range(20)] == [200] * 20
            assert lb.stats()["ejected"] == ["b0"]
            pair.backends[1].status = 500  # now both fail: the last one is never ejected
            codes = {lb.request("GET", "/health").status_code for _ in range(10)}
            assert codes == {500} and lb.stats()["ejected"] == ["b0"]
    finally:
        pair.stop()


def test_the_balancer_outlives_the_registry(tmp_path: object) -> None:
    from pathlib import Path

    server = Server(Path(str(tmp_path)) / "data")
    server.start()
    fleet = Fleet(server, 2)
    try:
        with Client(server.addr) as client, client.balancer(fleet.service) as lb:
            assert lb.request("GET", "/health").status_code == 200
            server.kill()
            deadline = time.monotonic() + 5
            while lb.stats()["stale"] is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert [lb.request("GET", "/health").status_code for _ in range(10)] == [200] * 10
    finally:
        fleet.stop()
        server.stop()


def test_panic_mode_when_most_are_unhealthy(shared_server: Server) -> None:
    fleet = Fleet(shared_server, 3, checks=[{"type": "ttl", "ttl": "30s"}])
    try:
        for i in (0, 1):
            shared_server.http.put(
                f"/v1/services/{fleet.service}/instances/b{i}/heartbeat", json={"status": "critical"}
            )
        with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="round_robin") as lb:
            assert lb.stats()["panic"] is True and lb.stats()["in_pool"] == 3
            for _ in range(30):
                lb.request("GET", "/health")
            assert min(fleet.hits()) >= 5  # spread over all three, not only the healthy one
    finally:
        fleet.stop()


def test_non_idempotent_requests_are_not_retried(shared_server: Server, fleet: Fleet) -> None:
    for backend in fleet.backends:
        backend.status = 503
    with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="round_robin") as lb:
        response = lb.request("POST", "/health")
        assert response.status_code == 503 and lb.stats()["retries"] == 0
        assert sum(fleet.hits()) == 1


def test_async_balancer_streams(shared_server: Server, fleet: Fleet) -> None:
    async def scenario() -> None:
        async with AsyncClient(shared_server.addr) as client:
            lb = await client.balancer(fleet.service, strategy="weighted")
            async with lb:
                response = await lb.request("GET", "/health", stream=True)
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
                await response.aclose()
                assert body == b"ok"
                results = await asyncio.gather(*(lb.request("GET", "/health") for _ in range(30)))
                assert {r.status_code for r in results} == {200}
        assert sum(fleet.hits()) == 31

    asyncio.run(scenario())


def test_bad_reports_are_400_and_unknown_instances_ignored(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("rep")
    put(http, service, "a")
    response = http.post(
        "/v1/reports",
        json=[
            {"service": service, "id": "a", "ok": True, "latency_ms": 3},
            {"service": service, "id": "ghost", "ok": False},
        ],
    )
    assert response.json() == {"accepted": 1, "ignored": 1}
    bad = http.post("/v1/reports", json=[{"service": service, "id": "a", "ok": "yes"}])
    assert bad.status_code == 400 and bad.json()["error"].startswith("[0].ok")
    assert http.post("/v1/reports", json={"service": service}).status_code == 400


def test_unknown_strategy(shared_server: Server, fleet: Fleet) -> None:
    with Client(shared_server.addr) as client, pytest.raises(ValueError, match="strategy"):
        Balancer(client, fleet.service, strategy="random-ish")
    assert httpx.get(f"{shared_server.url}/healthz").status_code == 200


def test_a_request_that_fails_before_sending_leaves_no_load_behind(shared_server: Server, fleet: Fleet) -> None:
    with Client(shared_server.addr) as client, client.balancer(fleet.service, strategy="least_loaded") as lb:
        for _ in range(3):
            with pytest.raises(TypeError):
                lb.request("GET", "/health", content=object())  # httpx refuses to build it
        assert lb.core.pool.load.outstanding == {} and lb.core.pool.load.total == 0
        assert lb.request("GET", "/health").status_code == 200


def test_a_cancelled_async_request_leaves_no_load_behind(shared_server: Server, fleet: Fleet) -> None:
    for backend in fleet.backends:
        backend.delay = 2.0

    async def scenario() -> None:
        async with AsyncClient(shared_server.addr) as client:
            lb = await client.balancer(fleet.service, strategy="least_loaded")
            async with lb:
                load = lb.core.pool.load
                task = asyncio.ensure_future(lb.request("GET", "/health"))
                deadline = time.monotonic() + 5
                while load.total == 0:  # until it is in flight
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert load.outstanding == {} and load.total == 0

    asyncio.run(scenario())


class GarbleProxy(Served):
    """Forwards to the registry its first `honest` requests, then answers 200 with garbage JSON
    until `garbage` is cleared: a fault the SDK does not translate into an ApiError. Forwarded
    blocking queries wait a second at most, so that none holds the registry open after the test."""

    def __init__(self, upstream: str, honest: int = 1) -> None:
        self.garbage = True
        self.honest = honest
        proxy = self

        class Handler(Quiet):
            def do_GET(self) -> None:
                if proxy.garbage and proxy.honest <= 0:
                    status, body, index = 200, b'[{"id": "x", oops', "1"
                else:
                    proxy.honest -= 1
                    answer = httpx.get(upstream + re.sub(r"wait=[^&]+", "wait=1s", self.path), timeout=10)
                    status, body, index = answer.status_code, answer.content, answer.headers["x-swarm-index"]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Swarm-Index", index)
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def test_the_follow_loop_survives_any_error_and_says_so(shared_server: Server, fleet: Fleet) -> None:
    proxy = GarbleProxy(shared_server.url)
    try:
        with Client(f"127.0.0.1:{proxy.port}") as client, client.balancer(fleet.service) as lb:
            wait_for(lambda: lb.stats()["stale"] is not None)
            assert "does not look like a swarm server" in lb.stats()["stale"]
            assert lb.request("GET", "/health").status_code == 200  # the last view still serves
            proxy.garbage = False
            extra = HttpBackend()
            try:
                put(shared_server.http, fleet.service, "b3", address="127.0.0.1", port=extra.port)
                wait_for(lambda: lb.stats()["instances"] == 4 and lb.stats()["stale"] is None)
            finally:
                extra.stop()
    finally:
        proxy.stop()


def test_async_with_the_balancer_starts_and_closes_it(shared_server: Server, fleet: Fleet) -> None:
    async def scenario() -> None:
        async with AsyncClient(shared_server.addr) as client, client.balancer(fleet.service) as lb:
            assert lb.stats()["instances"] == 3
            assert (await lb.request("GET", "/health")).status_code == 200

    asyncio.run(scenario())


def test_with_every_instance_down_the_error_says_what_was_tried(shared_server: Server) -> None:
    fleet = Fleet(shared_server, 2)
    fleet.stop()
    with (
        Client(shared_server.addr) as client,
        client.balancer(fleet.service, strategy="round_robin") as lb,
        pytest.raises(AllFailed) as failed,
    ):
        lb.request("GET", "/health")
    assert isinstance(failed.value, NoInstance) and isinstance(failed.value.__cause__, httpx.ConnectError)
    message = str(failed.value)
    assert message.startswith(f"no instance of {fleet.service!r} answered: ")
    for i, backend in enumerate(fleet.backends):
        assert f"b{i} at 127.0.0.1:{backend.port}: ConnectError" in message


def test_a_second_of_reports_on_long_names_is_sent_whole_in_batches_under_the_body_limit(
    shared_server: Server,
) -> None:
    # 1,000 reports (the most a balancer keeps a second) about long names come to ~150 KB: over
    # the server's 64 KiB body limit in one request, which the client splits.
    service, iid = unique("r" * 40), "i" * 60
    put(shared_server.http, service, iid)
    reports = [Report(service=service, id=iid, ok=True, latency_ms=12.345678, code=200)] * 1000
    with Client(shared_server.addr) as client:
        assert client.report(reports) == ReportsAccepted(accepted=1000, ignored=0)

    async def scenario() -> ReportsAccepted:
        async with AsyncClient(shared_server.addr) as client:
            return await client.report(reports)

    assert asyncio.run(scenario()) == ReportsAccepted(accepted=1000, ignored=0)
