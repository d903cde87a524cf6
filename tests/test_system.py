"""/v1/server, /healthz, /metrics, the OpenAPI document, the app under a plain ASGI server, stopping."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from swarm_discovery.core.core import CoreSettings
from swarm_discovery.fronts.http.app import create_app
from tests.conftest import Server
from tests.helpers import put, unique


def test_server_info_and_health(shared_server: Server) -> None:
    info = shared_server.http.get("/v1/server").json()
    assert info["store"] == "sqlite" and info["version"] and info["index"] >= 0
    assert info["data_dir"].endswith("registry.db")
    assert shared_server.http.get("/healthz").json() == {"status": "ok"}


def test_metrics_count_requests_instances_and_commits(shared_server: Server) -> None:
    service = unique("m")
    put(shared_server.http, service, "a")
    shared_server.http.get(f"/v1/services/{service}")
    text = shared_server.http.get("/metrics").text
    assert 'swarm_http_requests_total{code="200",method="GET",route="/v1/services/{service}"}' in text
    assert 'swarm_http_request_duration_seconds_bucket{le="0.001",method="PUT"' in text
    assert 'swarm_instances{health="passing"}' in text
    assert "swarm_store_commit_batch_size_count" in text
    assert "swarm_watchers 0.0" in text


def test_openapi_document_describes_the_api(shared_server: Server) -> None:
    doc = shared_server.http.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    register = doc["paths"]["/v1/services/{service}/instances/{id}"]["put"]
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InstanceSpec"
    }
    spec = doc["components"]["schemas"]["InstanceSpec"]
    assert spec["properties"]["port"]["maximum"] == 65535 and "address" in spec["required"]
    assert {"/v1/watch", "/v1/nodes", "/v1/services", "/metrics"} <= set(doc["paths"])


def test_the_app_is_a_plain_asgi_callable(tmp_path: Path) -> None:
    """`swarm serve` runs it over RSGI; any ASGI server runs `create_app()` as it is."""

    async def scenario() -> list[tuple[int, bytes]]:
        app = create_app(CoreSettings(data_dir=str(tmp_path)))
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        acknowledged: asyncio.Queue[str] = asyncio.Queue()

        async def lifespan_send(message: dict[str, Any]) -> None:
            await acknowledged.put(message["type"])

        early = await asgi_request(app, "GET", "/v1/services")
        lifespan = asyncio.ensure_future(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, events.get, lifespan_send)
        )
        await events.put({"type": "lifespan.startup"})
        assert await acknowledged.get() == "lifespan.startup.complete"
        answers = [early]
        body = json.dumps({"address": "10.0.0.1", "port": 80}).encode()
        answers.append(await asgi_request(app, "PUT", "/v1/services/a/instances/x", body))
        answers.append(await asgi_request(app, "GET", "/v1/services/a"))
        answers.append(await asgi_request(app, "GET", "/v1/services/a"))
        # so the second GET was answered from the cache
        assert app.cached("/v1/services/a", "", lambda name: None) is not None
        answers.append(await watch_until_first_event(app))
        await events.put({"type": "lifespan.shutdown"})
        assert await acknowledged.get() == "lifespan.shutdown.complete"
        await lifespan
        return answers

    early, (put_status, _), (first, listing), (second, cached), (watch_status, snapshot) = asyncio.run(scenario())
    assert early[0] == 503 and b"starting" in early[1]  # before the lifespan has started the registry
    assert put_status == first == second == watch_status == 200
    assert json.loads(listing)[0]["id"] == "x" and cached == listing
    assert snapshot.startswith(b"id: 1\nevent: snapshot\ndata: [") and b'"id":"x"' in snapshot


async def asgi_request(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request over ASGI: its status and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def watch_until_first_event(app: Any) -> tuple[int, bytes]:
    """Open a watch stream over ASGI, take its first event, then go away: the stream must end."""
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            gone.set()

    scope = {"type": "http", "method": "GET", "path": "/v1/watch", "query_string": b"service=a", "headers": []}
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent[0]["status"], sent[1]["body"]


def test_sigterm_ends_watches_and_blocking_queries_at_once(server: Server) -> None:
    """A service manager's SIGTERM stops the server within a second or two, even with clients waiting."""
    index = server.http.get("/v1/services/held").headers["x-swarm-index"]
    with ThreadPoolExecutor(2) as pool:
        params = {"index": index, "wait": "5m"}
        blocking = pool.submit(httpx.get, server.url + "/v1/services/held", params=params, timeout=10)
        watch = pool.submit(_first_lines_until_closed, server.url + "/v1/watch?service=held")
        deadline = time.monotonic() + 10
        while server.http.get("/v1/server").json()["watchers"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        began = time.monotonic()
        server.stop(within=3.0)
        assert time.monotonic() - began < 3.0
        answered = blocking.result(timeout=5)
        assert answered.status_code == 200 and answered.json() == []
        assert watch.result(timeout=5)[:2] == ["id: " + index, "event: snapshot"]


def _first_lines_until_closed(url: str) -> list[str]:
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=None)) as response:
        return [line for line in response.iter_lines() if line]
