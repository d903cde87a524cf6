"""The Python SDK, sync and async, against a real server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from swarm_discovery import AsyncClient, Client
from swarm_discovery.errors import ApiError, Unreachable
from tests.conftest import Server
from tests.helpers import unique


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


def test_unreachable_server_is_named() -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(Unreachable) as gone:
        client.services()
    assert "127.0.0.1:1" in str(gone.value)


def test_swarm_addr_picks_the_server(shared_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_ADDR", shared_server.addr)
    with Client() as client:
        assert client.server().version
