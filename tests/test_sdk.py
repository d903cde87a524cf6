"""The Python SDK, sync and async, against a real server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from swarm_discovery import AsyncClient, Client
from swarm_discovery.errors import ApiError, Unreachable
from swarm_discovery.sdk.client import NotSwarm
from tests.backends import HtmlServer
from tests.conftest import Server
from tests.helpers import unique, wait_for


def test_sync_client_round_trip(shared_server: Server) -> None:
    service = unique("sdk")
    with Client(shared_server.addr) as client:
        view = client.register(
            service,
            "a",
            address="10.0.0.1",
            port=8000,
            tags=["vllm"],
            capabilities={"gpu": {"memory_gb": 80}},
            checks=[{"type": "ttl", "ttl": "30s"}],
        )
        assert view.status == "passing" and view.service == service
        client.register(service, "b", {"address": "10.0.0.2", "port": 8000})
        beat = client.heartbeat(service, "a", metrics={"queue_depth": 3})
        assert beat.metrics == {"queue_depth": 3}
        found = client.instances(service, selector="instance.capabilities.gpu.memory_gb >= 80")
        assert [i.id for i in found] == ["a"]
        assert next(s for s in client.services() if s.name == service).instances == 2
        assert client.maintenance(service, "b", True, "swap").status == "maintenance"
        assert [i.id for i in client.instances(service)] == ["a"]
        node = client.put_node(unique("n"), kind="storage", resources={"storage_gb": 5000})
        assert client.node(node.id).resources.storage_gb == 5000
        assert node.id in [n.id for n in client.nodes(kind="storage")]
        client.deregister(service, "b")
        assert client.server().store == "sqlite"
        with pytest.raises(ApiError) as bad:
            client.register(service, "c", address="x", port=0)
        assert bad.value.status_code == 400 and "port" in bad.value.message


def test_sync_watch_iterator_sees_changes(shared_server: Server) -> None:
    service = unique("sdkwatch")
    with Client(shared_server.addr) as client:
        client.register(service, "a", address="10.0.0.1", port=1)
        views = client.watch(service, wait=5)
        assert [i.id for i in next(views)] == ["a"]
        threading.Timer(
            0.2, lambda: Client(shared_server.addr).register(service, "b", address="10.0.0.2", port=1)
        ).start()
        assert [i.id for i in next(views)] == ["a", "b"]


def test_async_client(shared_server: Server) -> None:
    service = unique("async")

    async def scenario() -> None:
        async with AsyncClient(shared_server.addr) as client:
            await client.register(service, "a", address="10.0.0.1", port=8000)
            views = client.watch(service, wait=5)
            assert [i.id for i in await views.__anext__()] == ["a"]
            change = asyncio.ensure_future(views.__anext__())
            await asyncio.sleep(0.1)
            await client.register(service, "b", address="10.0.0.2", port=8000)
            assert [i.id for i in await asyncio.wait_for(change, 5)] == ["a", "b"]
            await views.aclose()
            with pytest.raises(ApiError):
                await client.deregister(service, "nope")

    asyncio.run(scenario())


def test_a_name_that_would_reach_another_path_is_refused_before_anything_is_sent(shared_server: Server) -> None:
    service = unique("sdk-path")
    with Client(shared_server.addr + "/") as client:  # a URL copied from a browser ends in "/"
        client.register(service, "w5", address="10.0.0.5", port=8000)
        for bad in ("nothere/../w5", "w5?x", "w5#x", "w\n5", "../w5"):
            with pytest.raises(ApiError) as refused:
                client.deregister(service, bad)
            assert refused.value.status_code == 400 and refused.value.message.startswith(f"id: {bad!r} must match")
        with pytest.raises(ApiError, match=r"^400: service: 'web#x' must match"):
            client.instances("web#x")
        with pytest.raises(ApiError, match=r"^400: id: 'n/1' must match"):
            client.node("n/1")
        assert [i.id for i in client.instances(service)] == ["w5"]  # still there


def test_unreachable_server_is_named() -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(Unreachable) as gone:
        client.services()
    assert "127.0.0.1:1" in str(gone.value)


def test_swarm_addr_picks_the_server(shared_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_ADDR", shared_server.addr)
    with Client() as client:
        assert client.server().version


def test_watch_and_events_outlive_a_server_restart(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="swarm.sdk")
    with Client(server.addr) as client:
        client.register("svc", "a", address="10.0.0.1", port=1)
        views = client.watch("svc", wait=5)
        events = client.events("svc")
        assert [i.id for i in next(views)] == ["a"]
        assert next(events).event == "snapshot"
        server.stop()
        seen: list[str] = []

        def follow() -> None:  # each asks while the server is down, and waits for it
            while "b" not in [i.id for i in next(views)]:
                pass
            # after a restart a stream resumes with a fresh snapshot (no history reaches back): b is in
            # that snapshot, or comes as a put if it was registered after
            while (event := next(events)).event not in ("put", "snapshot") or '"b"' not in event.data:
                assert event.event == "snapshot", event
            seen.append("b")

        follower = threading.Thread(target=follow)
        follower.start()
        wait_for(lambda: any("lost the server" in r.getMessage() for r in caplog.records))
        server.start()
        client.register("svc", "b", address="10.0.0.2", port=1)
        follower.join(30)
        assert seen == ["b"]
    said = [r.getMessage() for r in caplog.records]
    assert any("watch of svc: lost the server" in m and "cannot reach" in m for m in said), said
    assert any("watch of svc" in m and "answers again" in m for m in said), said
    assert any("events of svc" in m and "answers again" in m for m in said), said


def test_a_follower_never_answered_raises_at_once() -> None:
    with Client("127.0.0.1:1") as client:
        with pytest.raises(Unreachable):
            next(client.watch("svc"))
        with pytest.raises(Unreachable):
            next(client.events("svc"))


def test_keep_alive_sync_and_async(shared_server: Server) -> None:
    service = unique("alive")
    load = iter(range(1000))
    with Client(shared_server.addr) as client:
        client.register(service, "a", address="10.0.0.1", port=1, checks=[{"type": "ttl", "ttl": "300ms"}])
        with client.keep_alive(service, "a", every=0.1, metrics=lambda: {"queue_depth": next(load)}):
            started = time.monotonic()
            view = client.instance(service, "a")
            while time.monotonic() - started < 1.0 or view.metrics.get("queue_depth", 0) <= 3:
                view = client.instance(service, "a")  # three TTLs and more, each renewed in time
                assert view.status == "passing" and time.monotonic() - started < 5

        with pytest.raises(ApiError) as unknown:
            client.keep_alive(service, "nope").start()
        assert unknown.value.status_code == 404

    async def scenario() -> None:
        async with AsyncClient(shared_server.addr) as client:
            await client.register(service, "b", address="10.0.0.2", port=1, checks=[{"type": "ttl", "ttl": "300ms"}])
            async with client.keep_alive(service, "b", every=0.1, metrics={"queue_depth": 7}):
                await asyncio.sleep(0.8)  # past its TTL: renewed
                view = await client.instance(service, "b")
                deadline = time.monotonic() + 3
                while view.metrics != {"queue_depth": 7}:  # new metrics show within a second
                    assert view.status == "passing" and time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                    view = await client.instance(service, "b")

    asyncio.run(scenario())


def test_a_server_that_is_not_swarm_is_named() -> None:
    web = HtmlServer()
    try:
        with Client(web.addr) as client, pytest.raises(NotSwarm) as strange:
            client.services()
    finally:
        web.stop()
    assert str(strange.value).endswith(
        f"http://{web.addr} does not look like a swarm server (it answered 404 text/html to GET /v1/services)"
    )
