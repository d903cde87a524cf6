"""Bad input: a 4xx naming the field, never a 500, and a rejected write changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from tests.conftest import Server
from tests.helpers import instance, put, unique


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (instance(port=0), 400, "port"),
        (instance(port=70000), 400, "port"),
        (instance(port="80"), 400, "port"),
        (instance(colour="red"), 400, "colour"),
        (instance(location={"region": "eu", "altitude": 3}), 400, "altitude"),
        (instance(location={"lat": 120}), 400, "location.lat"),
        (instance(tags=["t"] * 65), 400, "tags"),
        (instance(tags=[3]), 400, "tags[0]"),
        (instance(meta={f"k{i}": "v" for i in range(65)}), 400, "meta"),
        (instance(meta={"k": "v" * 600}), 400, "meta"),
        (instance(weight=0), 400, "weight"),
        (instance(checks=[{"type": "carrier-pigeon"}]), 400, "checks[0].type"),
        (instance(checks=[{"type": "ttl"}]), 400, "checks[0].ttl"),
        (instance(checks=[{"type": "ttl", "ttl": "soon"}]), 400, "checks[0].ttl"),
        (instance(checks=[{"type": "http", "url": "http://x/", "interval": "10ms"}]), 400, "checks[0].interval"),
        (instance(metrics={"queue_depth": "deep"}), 400, "metrics"),
        (instance(capabilities={"gpu": {"memory_bytes": [1, 2**64]}}), 400, "capabilities.gpu.memory_bytes[1]"),
        (instance(service="other"), 400, "service"),
        (instance(id="other"), 400, "id"),
        ({"port": 8000}, 400, "address"),
    ],
)
def test_bad_instance_is_rejected_naming_the_field(
    shared_server: Server, body: dict[str, object], status: int, names: str
) -> None:
    service, iid = unique("bad"), "one"
    response = shared_server.http.put(f"/v1/services/{service}/instances/{iid}", json=body)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]
    assert shared_server.http.get(f"/v1/services/{service}/instances/{iid}").status_code == 404


def test_rejected_replacement_leaves_the_old_record(shared_server: Server) -> None:
    service = unique("keep")
    put(shared_server.http, service, "a", port=9000, tags=["old"])
    index = shared_server.http.get("/v1/server").json()["index"]
    bad = shared_server.http.put(f"/v1/services/{service}/instances/a", json=instance(port=-1, tags=["new"]))
    assert bad.status_code == 400
    kept = shared_server.http.get(f"/v1/services/{service}/instances/a").json()
    assert (kept["port"], kept["tags"]) == (9000, ["old"])
    assert shared_server.http.get("/v1/server").json()["index"] == index


def test_capabilities_are_checked_on_every_registration_not_only_the_first_with_them(shared_server: Server) -> None:
    # The server checks a set of capabilities once and shares it among the instances that carry
    # it: a bad set must never become one that passes unchecked.
    service = unique("caps")
    good = {"gpu": {"model": "H100", "memory_gb": 80}}
    bad = {"gpu": {"model": "H100", "memory_bytes": 2**64}}
    for iid in ("a", "b"):
        put(shared_server.http, service, iid, capabilities=good)
    for iid in ("c", "d"):
        response = shared_server.http.put(f"/v1/services/{service}/instances/{iid}", json=instance(capabilities=bad))
        assert response.status_code == 400 and "capabilities.gpu.memory_bytes" in response.json()["error"]
    listed = shared_server.http.get(f"/v1/services/{service}", params={"all": "true"}).json()
    assert sorted((i["id"], i["capabilities"]) for i in listed) == [("a", good), ("b", good)]


def test_invalid_json_and_empty_body(shared_server: Server) -> None:
    url = f"/v1/services/{unique('json')}/instances/a"
    broken = shared_server.http.put(url, content=b'{"address": ')
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["error"]
    empty = shared_server.http.put(url, content=b"")
    assert empty.status_code == 400 and "body" in empty.json()["error"]
    array = shared_server.http.put(url, content=b"[1]")
    assert array.status_code == 400 and "object" in array.json()["error"]


def test_body_over_64_kib_is_413(shared_server: Server) -> None:
    url = f"/v1/services/{unique('big')}/instances/a"
    big = instance(capabilities={"blob": "x" * 70_000})
    response = shared_server.http.put(url, json=big)
    assert response.status_code == 413
    assert "64 KiB" in response.json()["error"]
    assert shared_server.http.get(url).status_code == 404


def test_chunked_bodies_are_read_whole_and_held_to_the_same_limit(shared_server: Server) -> None:
    """No Content-Length to refuse on: the limit applies while the chunks arrive."""
    url = f"/v1/services/{unique('chunked')}/instances/a"

    def chunks(body: bytes) -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    small = msgspec.json.encode(instance(port=8123))
    response = shared_server.http.put(url, content=chunks(small))
    assert response.status_code == 200 and response.json()["port"] == 8123
    big = msgspec.json.encode(instance(capabilities={"blob": "x" * 70_000}))
    response = shared_server.http.put(url, content=chunks(big))
    assert response.status_code == 413 and "64 KiB" in response.json()["error"]
    assert shared_server.http.get(url).json()["port"] == 8123


def test_bad_names_in_the_path(shared_server: Server) -> None:
    response = shared_server.http.put("/v1/services/-bad/instances/a", json=instance())
    assert response.status_code == 400 and "service" in response.json()["error"]
    long_id = "a" * 129
    response = shared_server.http.put(f"/v1/services/ok/instances/{long_id}", json=instance())
    assert response.status_code == 400 and response.json()["error"].startswith("id:")


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("all=maybe", "all"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("index=-1", "index"),
        ("wait=forever", "wait"),
        ("near=1,2,3", "near"),
        ("near=100,0", "near"),
        ("selector=instance.port%20%3E%3D", "selector"),
        ("selector=nonsense.field%20%3D%3D%201", "selector"),
    ],
)
def test_bad_query_parameters(shared_server: Server, query: str, names: str) -> None:
    response = shared_server.http.get(f"/v1/services/anything?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{names}:")


def test_selector_error_says_where(shared_server: Server) -> None:
    response = shared_server.http.get("/v1/services/x", params={"selector": "instance.port >= "})
    assert response.status_code == 400
    assert "Syntax error" in response.json()["error"] and "^" in response.json()["error"]


def test_unknown_things_are_404_json(shared_server: Server) -> None:
    assert shared_server.http.get("/v1/nope").json()["error"].startswith("no such path")
    listing = shared_server.http.get("/v1/services/llm/instances")  # where registrations go: a natural guess
    assert listing.status_code == 404 and "listed at /v1/services/llm" in listing.json()["error"]
    missing = shared_server.http.delete("/v1/services/x/instances/none")
    assert missing.status_code == 404 and "none" in missing.json()["error"]
    assert shared_server.http.put("/v1/services/x/instances/none/heartbeat").status_code == 404
    assert shared_server.http.get("/v1/nodes/none").status_code == 404
    wrong_method = shared_server.http.post("/v1/services")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]


def test_bad_nodes(shared_server: Server) -> None:
    http = shared_server.http
    response = http.put("/v1/nodes/n1", json={"kind": "toaster"})
    assert response.status_code == 400 and response.json()["error"].startswith("kind:")
    response = http.put("/v1/nodes/n1", json={"resources": {"gpus": [{"model": "H100", "memory_gb": -1}]}})
    assert response.status_code == 400 and "resources.gpus[0].memory_gb" in response.json()["error"]
    assert http.get("/v1/nodes?kind=toaster").status_code == 400
    assert http.get("/v1/nodes/n1").status_code == 404


def test_bad_heartbeat_and_maintenance(shared_server: Server) -> None:
    service = unique("hb")
    put(shared_server.http, service, "a")
    base = f"/v1/services/{service}/instances/a"
    assert shared_server.http.put(f"{base}/heartbeat", json={"status": "fine"}).status_code == 400
    assert shared_server.http.put(f"{base}/maintenance", json={"reason": "x"}).json()["error"].startswith("enable")
