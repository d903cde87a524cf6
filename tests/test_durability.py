"""An acknowledged write survives kill -9; restart reloads everything."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import Server
from tests.helpers import ids, instance


async def _register_many(url: str, service: str, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(i: int) -> int:
            body = instance(port=1000 + i, capabilities={"gpu": {"memory_gb": 80 if i % 2 else 24}})
            response = await http.put(f"/v1/services/{service}/instances/i{i}", json=body)
            return response.status_code

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_acknowledged_writes_survive_kill_9(server: Server) -> None:
    statuses = asyncio.run(_register_many(server.url, "llm", 300))
    assert statuses == [200] * 300
    http = server.http
    http.put("/v1/nodes/gpu-7", json={"kind": "compute", "location": {"region": "eu-west"}})
    http.put("/v1/services/llm/instances/i1/maintenance", json={"enable": True, "reason": "driver update"})
    http.delete("/v1/services/llm/instances/i2")
    index = http.get("/v1/server").json()["index"]

    server.kill()
    server.start()

    http = server.http
    everything = http.get("/v1/services/llm", params={"all": "true"}).json()
    assert len(everything) == 299
    by_id = {i["id"]: i for i in everything}
    assert "i2" not in by_id and by_id["i299"]["port"] == 1299
    assert by_id["i1"]["status"] == "maintenance" and by_id["i1"]["maintenance"]["reason"] == "driver update"
    assert http.get("/v1/nodes/gpu-7").json()["location"] == {"region": "eu-west"}
    selected = http.get("/v1/services/llm", params={"selector": "instance.capabilities.gpu.memory_gb >= 80"})
    assert len(selected.json()) == 149  # odd ports minus i1 (maintenance)
    assert http.get("/v1/server").json()["index"] >= index


def test_ttl_starts_afresh_after_restart(server: Server) -> None:
    http = server.http
    http.put("/v1/services/ttl/instances/a", json=instance(checks=[{"type": "ttl", "ttl": "1s"}]))
    time.sleep(1.3)
    assert ids(http.get("/v1/services/ttl")) == []  # lapsed
    server.kill()
    server.start()
    # After the restart the TTL runs again from the start: listed until it lapses anew.
    assert ids(server.http.get("/v1/services/ttl")) == ["a"]
    time.sleep(1.3)
    assert ids(server.http.get("/v1/services/ttl")) == []


def test_graceful_stop_keeps_everything(server: Server) -> None:
    server.http.put("/v1/services/s/instances/a", json=instance())
    server.stop()
    server.http = httpx.Client(base_url=server.url, timeout=10)
    server.start()
    assert ids(server.http.get("/v1/services/s")) == ["a"]
