"""/v1/server, /healthz, /metrics and the OpenAPI document."""

from __future__ import annotations

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
