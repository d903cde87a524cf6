"""The catalog and instance queries: tags, selectors over instance and node, near, limit, all."""

from __future__ import annotations

from tests.conftest import Server
from tests.helpers import ids, put, unique

H100 = {"gpu": {"model": "H100", "memory_gb": 80, "count": 8}, "models": ["llama-3-70b"]}
A10 = {"gpu": {"model": "A10", "memory_gb": 24, "count": 1}}


def test_catalog_counts_tags_and_versions(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("cat")
    put(http, service, "a", tags=["vllm", "fp8"], version="1.4.2")
    put(http, service, "b", tags=["vllm"], version="1.5.0")
    put(http, service, "c", tags=["tgi"], version="1.4.2")
    http.put(f"/v1/services/{service}/instances/c/maintenance", json={"enable": True, "reason": "upgrade"})
    response = http.get("/v1/services")
    assert int(response.headers["x-swarm-index"]) > 0
    entry = next(s for s in response.json() if s["name"] == service)
    assert entry == {
        "name": service,
        "instances": 3,
        "healthy": 2,
        "tags": ["fp8", "tgi", "vllm"],
        "versions": ["1.4.2", "1.5.0"],
    }


def test_tags_must_all_match(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("tags")
    put(http, service, "a", tags=["vllm", "fp8"])
    put(http, service, "b", tags=["vllm"])
    assert ids(http.get(f"/v1/services/{service}", params={"tag": "vllm"})) == ["a", "b"]
    assert ids(http.get(f"/v1/services/{service}", params=[("tag", "vllm"), ("tag", "fp8")])) == ["a"]
    assert ids(http.get(f"/v1/services/{service}", params={"tag": "nope"})) == []


def test_selector_on_capabilities_skips_records_missing_the_field(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("sel")
    put(http, service, "big", capabilities=H100)
    put(http, service, "small", capabilities=A10)
    put(http, service, "cpu")  # no gpu at all: the expression errors on it, so it does not match
    query = {"selector": "instance.capabilities.gpu.memory_gb >= 80"}
    assert ids(http.get(f"/v1/services/{service}", params=query)) == ["big"]
    query = {"selector": '"llama-3-70b" in instance.capabilities.models'}
    assert ids(http.get(f"/v1/services/{service}", params=query)) == ["big"]
    query = {"selector": "!has(instance.capabilities.gpu)"}
    assert ids(http.get(f"/v1/services/{service}", params=query)) == ["cpu"]


def test_selector_sees_the_node(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("nodesel")
    eu, us = unique("node"), unique("node")
    http.put(
        f"/v1/nodes/{eu}",
        json={
            "kind": "compute",
            "location": {"region": "eu-west"},
            "resources": {"gpus": [{"model": "H100", "memory_gb": 80, "count": 8}]},
        },
    )
    put(http, service, "on-eu", node=eu, capabilities=H100)
    put(http, service, "on-us", node=us, capabilities=H100)  # node not registered yet
    query = {"selector": 'instance.capabilities.gpu.memory_gb >= 80 && node.location.region == "eu-west"'}
    assert ids(http.get(f"/v1/services/{service}", params=query)) == ["on-eu"]
    # Registering the node changes what the selector sees, and moves the service's index.
    before = int(http.get(f"/v1/services/{service}", params=query).headers["x-swarm-index"])
    http.put(f"/v1/nodes/{us}", json={"location": {"region": "eu-west"}})
    after = http.get(f"/v1/services/{service}", params=query)
    assert ids(after) == ["on-eu", "on-us"] and int(after.headers["x-swarm-index"]) > before
    http.delete(f"/v1/nodes/{eu}")
    assert ids(http.get(f"/v1/services/{service}", params=query)) == ["on-us"]


def test_near_sorts_by_zone_then_region_then_distance(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("near")
    put(http, service, "us", location={"region": "us-east", "zone": "us-east-1a", "lat": 40.7, "lon": -74.0})
    put(http, service, "ams-b", location={"region": "eu-west", "zone": "eu-west-1b", "lat": 52.37, "lon": 4.9})
    put(http, service, "nowhere")
    put(http, service, "ams-a", location={"region": "eu-west", "zone": "eu-west-1a", "lat": 52.37, "lon": 4.9})
    put(http, service, "paris", location={"region": "eu-central", "zone": "eu-central-1a", "lat": 48.85, "lon": 2.35})
    url = f"/v1/services/{service}"
    assert ids(http.get(url, params={"near": "eu-west-1a"})) == ["ams-a", "ams-b", "us", "paris", "nowhere"]
    assert ids(http.get(url, params={"near": "eu-west"}))[:2] == ["ams-b", "ams-a"]
    # London: Paris is nearer than Amsterdam, New York far, no location last.
    assert ids(http.get(url, params={"near": "51.5,-0.12"})) == ["paris", "ams-b", "ams-a", "us", "nowhere"]
    assert ids(http.get(url, params={"near": "51.5,-0.12", "limit": 2})) == ["paris", "ams-b"]


def test_all_includes_unhealthy_and_maintenance(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("all")
    put(http, service, "up")
    put(http, service, "down")
    put(http, service, "maint")
    http.put(f"/v1/services/{service}/instances/down/heartbeat", json={"status": "critical", "output": "OOM"})
    # A heartbeat status only applies to TTL checks; give "down" one.
    put(http, service, "down", checks=[{"type": "ttl", "ttl": "30s"}])
    beat = http.put(f"/v1/services/{service}/instances/down/heartbeat", json={"status": "critical", "output": "OOM"})
    assert beat.json()["status"] == "critical"
    response = http.put(f"/v1/services/{service}/instances/maint/maintenance", json={"enable": True, "reason": "x"})
    assert response.json()["status"] == "maintenance" and response.json()["maintenance"]["reason"] == "x"
    assert ids(http.get(f"/v1/services/{service}")) == ["up"]
    everything = http.get(f"/v1/services/{service}", params={"all": "true"}).json()
    assert {i["id"]: i["status"] for i in everything} == {"up": "passing", "down": "critical", "maint": "maintenance"}
    down = next(i for i in everything if i["id"] == "down")
    assert down["check_states"][0]["output"] == "OOM"
    by_check = {"selector": 'instance.check_states.exists(c, c.output == "OOM")', "all": "true"}
    assert ids(http.get(f"/v1/services/{service}", params=by_check)) == ["down"]
    http.put(f"/v1/services/{service}/instances/maint/maintenance", json={"enable": False})
    assert ids(http.get(f"/v1/services/{service}")) == ["up", "maint"]


def test_register_replace_deregister(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("life")
    first = put(http, service, "a", port=1000).json()
    second = put(http, service, "a", port=2000).json()
    assert second["port"] == 2000 and second["registered_at"] == first["registered_at"]
    assert second["index"] > first["index"] and second["updated_at"] >= first["updated_at"]
    assert http.delete(f"/v1/services/{service}/instances/a").status_code == 200
    assert http.get(f"/v1/services/{service}").json() == []
    assert service not in [s["name"] for s in http.get("/v1/services").json()]


def test_nodes_query_by_kind_and_selector(shared_server: Server) -> None:
    http = shared_server.http
    gpu, disk = unique("gpu"), unique("disk")
    node = {
        "kind": "compute",
        "address": "10.8.0.7",
        "labels": {"tier": "gold"},
        "resources": {
            "gpus": [{"model": "H100", "memory_gb": 80, "count": 8, "compute_capability": "9.0"}],
            "cpu_cores": 96,
            "memory_gb": 1024,
        },
    }
    created = http.put(f"/v1/nodes/{gpu}", json=node).json()
    assert created["id"] == gpu and created["index"] > 0
    http.put(f"/v1/nodes/{disk}", json={"kind": "storage", "resources": {"storage_gb": 100000, "storage_kind": "nvme"}})
    assert gpu in [n["id"] for n in http.get("/v1/nodes", params={"kind": "compute"}).json()]
    assert gpu not in [n["id"] for n in http.get("/v1/nodes", params={"kind": "storage"}).json()]
    query = {"selector": 'node.resources.gpus.exists(g, g.model == "H100") && node.labels.tier == "gold"'}
    assert [n["id"] for n in http.get("/v1/nodes", params=query).json()] == [gpu]
    assert http.get(f"/v1/nodes/{gpu}").json()["resources"]["cpu_cores"] == 96
    assert http.delete(f"/v1/nodes/{gpu}").status_code == 200
    assert http.get(f"/v1/nodes/{gpu}").status_code == 404
