"""Writes that race on one record, from many connections, then `kill -9` and a restart.

Whatever the interleaving, what the server shows before the kill is what it shows after the
restart, and every acknowledged write is in it: a write answered 404 changed nothing, and one
answered 200 was not undone by another that had not seen it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from tests.conftest import Server
from tests.helpers import instance

CONNECTIONS = 8


def _durable(items: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What must survive a restart, per instance id."""
    return {
        i["id"]: (i["port"], i.get("node"), i.get("maintenance", {}).get("reason"), i["registered_at"]) for i in items
    }


def _state(server: Server, service: str) -> dict[str, tuple[Any, ...]]:
    return _durable(server.http.get(f"/v1/services/{service}", params={"all": "true"}).json())


async def _clients(url: str) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(CONNECTIONS)]


async def _close(clients: list[httpx.AsyncClient]) -> None:
    await asyncio.gather(*(c.aclose() for c in clients))


def _restarted(server: Server) -> None:
    server.kill()
    server.start()


def test_delete_racing_maintenance_leaves_nothing_behind(server: Server) -> None:
    service, count = "race-del", 50

    async def scenario() -> list[tuple[int, int]]:
        clients = await _clients(server.url)
        for i in range(count):
            await clients[0].put(f"/v1/services/{service}/instances/r{i}", json=instance(port=1000 + i))

        async def maintain(i: int) -> httpx.Response:
            await asyncio.sleep(0.001 * (i % 3))  # at, or just after, the delete's arrival
            path = f"/v1/services/{service}/instances/r{i}/maintenance"
            return await clients[(i + 1) % CONNECTIONS].put(path, json={"enable": True, "reason": "x"})

        async def race(i: int) -> tuple[int, int]:
            path = f"/v1/services/{service}/instances/r{i}"
            deleted, maintained = await asyncio.gather(clients[i % CONNECTIONS].delete(path), maintain(i))
            return deleted.status_code, maintained.status_code

        try:
            return await asyncio.gather(*(race(i) for i in range(count)))
        finally:
            await _close(clients)

    outcomes = asyncio.run(scenario())
    assert all(deleted == 200 and maintained in (200, 404) for deleted, maintained in outcomes), outcomes
    before = _state(server, service)
    assert before == {}  # every delete was acknowledged: nothing is left, whatever maintenance did
    _restarted(server)
    assert _state(server, service) == before


def test_reregistration_racing_maintenance_keeps_both(server: Server) -> None:
    service, count = "race-port", 50

    async def scenario() -> list[tuple[int, int]]:
        clients = await _clients(server.url)
        for i in range(count):
            await clients[0].put(f"/v1/services/{service}/instances/r{i}", json=instance(port=1000 + i))

        async def race(i: int) -> tuple[int, int]:
            path = f"/v1/services/{service}/instances/r{i}"
            registered, maintained = await asyncio.gather(
                clients[i % CONNECTIONS].put(path, json=instance(port=2000 + i)),
                clients[(i + 3) % CONNECTIONS].put(f"{path}/maintenance", json={"enable": True, "reason": "swap"}),
            )
            return registered.status_code, maintained.status_code

        try:
            return await asyncio.gather(*(race(i) for i in range(count)))
        finally:
            await _close(clients)

    outcomes = asyncio.run(scenario())
    assert set(outcomes) == {(200, 200)}
    before = _state(server, service)
    # Both were acknowledged, in whichever order: the new port and the maintenance both stand.
    assert before == {f"r{i}": (2000 + i, None, "swap", before[f"r{i}"][3]) for i in range(count)}
    _restarted(server)
    assert _state(server, service) == before


def test_maintenance_then_reregistration_keeps_the_maintenance(server: Server) -> None:
    service = "race-order"
    http = server.http
    for i in range(20):
        path = f"/v1/services/{service}/instances/m{i}"
        http.put(path, json=instance(port=3000 + i))
        assert http.put(f"{path}/maintenance", json={"enable": True, "reason": "driver"}).status_code == 200
        assert http.put(path, json=instance(port=4000 + i)).status_code == 200
    before = _state(server, service)
    assert all(port == 4000 + int(iid[1:]) and reason == "driver" for iid, (port, _, reason, _) in before.items())
    _restarted(server)
    assert _state(server, service) == before


def test_interleaved_writes_from_many_tasks_survive_kill_9(server: Server) -> None:
    """Registrations, maintenance, deregistrations and node writes on a few shared records."""
    service, ids, nodes = "race-mix", [f"x{i}" for i in range(12)], [f"n{i}" for i in range(4)]
    rng = random.Random(7)

    async def worker(client: httpx.AsyncClient, seed: int) -> list[int]:
        local = random.Random(seed)
        codes = []
        for _ in range(60):
            iid, node = local.choice(ids), local.choice(nodes)
            path = f"/v1/services/{service}/instances/{iid}"
            op = local.randrange(5)
            if op == 0:
                response = await client.put(path, json=instance(port=local.randrange(1, 65535), node=node))
            elif op == 1:
                response = await client.delete(path)
            elif op == 2:
                body = {"enable": local.random() < 0.7, "reason": f"r{local.randrange(100)}"}
                response = await client.put(f"{path}/maintenance", json=body)
            elif op == 3:
                response = await client.put(f"/v1/nodes/{node}", json={"kind": "compute", "labels": {"v": str(seed)}})
            else:
                response = await client.delete(f"/v1/nodes/{node}")
            codes.append(response.status_code)
        return codes

    async def scenario() -> list[int]:
        clients = await _clients(server.url)
        try:
            results = await asyncio.gather(*(worker(c, rng.randrange(10**6)) for c in clients for _ in range(2)))
        finally:
            await _close(clients)
        return [code for codes in results for code in codes]

    codes = asyncio.run(scenario())
    assert set(codes) <= {200, 404}, sorted(set(codes))
    assert codes.count(200) > len(codes) // 3  # the races really wrote
    before = _state(server, service)
    nodes_before = server.http.get("/v1/nodes").json()
    _restarted(server)
    assert _state(server, service) == before
    after = server.http.get("/v1/nodes").json()
    assert [(n["id"], n.get("labels")) for n in after] == [(n["id"], n.get("labels")) for n in nodes_before]
