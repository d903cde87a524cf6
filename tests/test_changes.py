"""Dynamic updates: blocking queries, the SSE change stream, heartbeats and TTL expiry."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx

from tests.conftest import Server
from tests.helpers import ids, put, unique


def test_blocking_query_returns_on_change(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("block")
    put(http, service, "a")
    first = http.get(f"/v1/services/{service}")
    index = int(first.headers["x-swarm-index"])
    threading.Timer(0.3, lambda: put(httpx.Client(base_url=shared_server.url), service, "b")).start()
    started = time.monotonic()
    second = http.get(f"/v1/services/{service}", params={"index": index, "wait": "10s"})
    took = time.monotonic() - started
    assert ids(second) == ["a", "b"]
    assert int(second.headers["x-swarm-index"]) > index
    assert 0.2 < took < 5


def test_blocking_query_ignores_other_services_and_times_out(shared_server: Server) -> None:
    http = shared_server.http
    service, other = unique("quiet"), unique("noisy")
    put(http, service, "a")
    index = int(http.get(f"/v1/services/{service}").headers["x-swarm-index"])
    threading.Timer(0.1, lambda: put(httpx.Client(base_url=shared_server.url), other, "x")).start()
    started = time.monotonic()
    response = http.get(f"/v1/services/{service}", params={"index": index, "wait": "800ms"})
    assert time.monotonic() - started >= 0.75
    assert int(response.headers["x-swarm-index"]) == index and ids(response) == ["a"]


def test_index_from_the_future_returns_at_once(shared_server: Server) -> None:
    started = time.monotonic()
    response = shared_server.http.get(f"/v1/services/{unique('future')}", params={"index": 10**9, "wait": "10s"})
    assert response.status_code == 200 and time.monotonic() - started < 2


def test_every_read_carries_the_index(shared_server: Server) -> None:
    for path in ("/v1/services", "/v1/services/x", "/v1/nodes", "/v1/server", "/healthz"):
        assert int(shared_server.http.get(path).headers["x-swarm-index"]) >= 0


def test_disconnecting_client_ends_its_wait(shared_server: Server) -> None:
    service = unique("gone")
    put(shared_server.http, service, "a")
    index = int(shared_server.http.get(f"/v1/services/{service}").headers["x-swarm-index"])
    client = httpx.Client(base_url=shared_server.url, timeout=0.5)
    with contextlib.suppress(httpx.ReadTimeout):
        client.get(f"/v1/services/{service}", params={"index": index, "wait": "60s"})
    client.close()
    deadline = time.monotonic() + 3
    while shared_server.http.get("/v1/server").json()["watchers"] != 0:
        assert time.monotonic() < deadline, "the server still waits for a client that left"
        time.sleep(0.05)


def _events(response: httpx.Response) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
        elif fields:
            yield fields
            fields = {}


def test_watch_stream_snapshot_then_changes(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("watch")
    put(http, service, "a", capabilities={"gpu": {"memory_gb": 80}})
    selector = "instance.capabilities.gpu.memory_gb >= 80"
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service, "selector": selector}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
        snapshot = next(events)
        assert snapshot["event"] == "snapshot"
        assert [i["id"] for i in json.loads(snapshot["data"])] == ["a"]
        put(http, service, "b", capabilities={"gpu": {"memory_gb": 80}})
        put(http, service, "small", capabilities={"gpu": {"memory_gb": 24}})  # not selected: no event
        http.put(f"/v1/services/{service}/instances/a/heartbeat", json={"metrics": {"queue_depth": 7}})
        http.delete(f"/v1/services/{service}/instances/b")
        received = [next(events) for _ in range(3)]
    # a's new metrics are a quiet change: shown within a second of its last version, so after b's delete
    assert [(e["event"], json.loads(e["data"])["id"]) for e in received] == [
        ("put", "b"),
        ("delete", "b"),
        ("put", "a"),
    ]
    assert json.loads(received[2]["data"])["metrics"] == {"queue_depth": 7}
    indexes = [int(e["id"]) for e in received]
    assert indexes == sorted(indexes) and indexes[0] > int(snapshot["id"])


def test_heartbeats_wake_watchers_only_for_what_changed(shared_server: Server) -> None:
    """No change, no new index; new metrics at most once a second per instance; a status at once."""
    http = shared_server.http
    service = unique("quiet")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "1h"}])
    beat = f"/v1/services/{service}/instances/a/heartbeat"

    def index() -> int:
        return int(http.get(f"/v1/services/{service}").headers["x-swarm-index"])

    before = index()
    for _ in range(20):
        assert http.put(beat, json={}).status_code == 200
    assert index() == before  # renewed, nothing to show: nobody woken
    answers = [http.put(beat, json={"metrics": {"queue_depth": n}}).json() for n in range(20)]
    assert [a["metrics"]["queue_depth"] for a in answers] == list(range(20))  # each answer is current
    deadline = time.monotonic() + 5
    while http.get(f"/v1/services/{service}").json()[0].get("metrics") != {"queue_depth": 19}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shown = index()
    assert 0 < shown - before <= 3  # twenty beats, at most a version a second (this took about one)
    http.put(beat, json={"status": "warning"})
    assert index() > shown and http.get(f"/v1/services/{service}").json()[0]["status"] == "warning"


def test_watch_resumes_from_last_event_id_without_loss(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("resume")
    put(http, service, "a")
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}
    ) as response:
        last = next(_events(response))["id"]
    put(http, service, "b")  # while nobody listens
    http.delete(f"/v1/services/{service}/instances/a")
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}, headers={"Last-Event-ID": last}
    ) as response:
        events = _events(response)
        missed = [next(events) for _ in range(2)]
    assert [(e["event"], json.loads(e["data"])["id"]) for e in missed] == [("put", "b"), ("delete", "a")]


def test_changes_at_one_index_carry_it_on_their_last_frame_only(shared_server: Server) -> None:
    """A node's change republishes every instance on it at one index: a client cut off inside that
    group must resume before it (and get all of it again), not after it with part of it missing."""
    http = shared_server.http
    service, node = unique("group"), unique("node")
    http.put(f"/v1/nodes/{node}", json={"kind": "compute"})
    for i in range(5):
        put(http, service, f"i{i}", node=node)
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}
    ) as response:
        events = _events(response)
        before = next(events)["id"]
        http.put(f"/v1/nodes/{node}", json={"kind": "compute", "labels": {"rack": "7"}})
        group = [next(events) for _ in range(5)]
    assert [e["event"] for e in group] == ["put"] * 5
    assert ["id" in e for e in group] == [False] * 4 + [True] and int(group[-1]["id"]) > int(before)
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}, headers={"Last-Event-ID": before}
    ) as response:
        events = _events(response)
        again = [next(events) for _ in range(5)]  # resuming from the last id seen replays the whole group
    assert sorted(json.loads(e["data"])["id"] for e in again) == [f"i{i}" for i in range(5)]


def test_a_delete_says_why_the_instance_left(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("why")
    for iid in ("gone", "sick", "resting"):
        put(http, service, iid, checks=[{"type": "ttl", "ttl": "1h"}])
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}
    ) as response:
        events = _events(response)
        next(events)
        http.delete(f"/v1/services/{service}/instances/gone")
        http.put(f"/v1/services/{service}/instances/sick/heartbeat", json={"status": "critical"})
        http.put(f"/v1/services/{service}/instances/resting/maintenance", json={"enable": True})
        left = [json.loads(next(events)["data"]) for _ in range(3)]
    assert [(e["id"], e["reason"]) for e in left] == [
        ("gone", "deregistered"),
        ("sick", "critical"),
        ("resting", "maintenance"),
    ]


def test_watch_with_unknown_history_sends_a_snapshot(shared_server: Server) -> None:
    service = unique("fresh")
    put(shared_server.http, service, "a")
    with httpx.Client(base_url=shared_server.url, timeout=10).stream(
        "GET", "/v1/watch", params={"service": service}, headers={"Last-Event-ID": str(10**9)}
    ) as response:
        first = next(_events(response))
    assert first["event"] == "snapshot" and [i["id"] for i in json.loads(first["data"])] == ["a"]


def test_watch_needs_a_service(shared_server: Server) -> None:
    response = shared_server.http.get("/v1/watch")
    assert response.status_code == 400 and response.json()["error"].startswith("service:")


def test_ttl_lapse_goes_critical_and_heartbeat_brings_it_back(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("ttl")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "400ms"}])
    put(http, service, "steady")
    assert ids(http.get(f"/v1/services/{service}")) == ["a", "steady"]
    index = int(http.get(f"/v1/services/{service}").headers["x-swarm-index"])
    started = time.monotonic()
    changed = http.get(f"/v1/services/{service}", params={"index": index, "wait": "5s"})
    assert ids(changed) == ["steady"]
    assert 0.3 < time.monotonic() - started < 2
    everything = {i["id"]: i for i in http.get(f"/v1/services/{service}", params={"all": "true"}).json()}
    assert everything["a"]["status"] == "critical"
    assert "TTL expired" in everything["a"]["check_states"][0]["output"]
    beat = http.put(f"/v1/services/{service}/instances/a/heartbeat", json={"metrics": {"gpu_util": 0.82}})
    assert beat.json()["status"] == "passing" and beat.json()["metrics"] == {"gpu_util": 0.82}
    assert ids(http.get(f"/v1/services/{service}")) == ["a", "steady"]


def test_heartbeats_keep_a_ttl_instance_alive(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("alive")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "500ms"}])
    for depth in range(8):
        time.sleep(0.15)
        http.put(f"/v1/services/{service}/instances/a/heartbeat", json={"metrics": {"queue_depth": depth}})
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]  # alive, well past its TTL
    deadline = time.monotonic() + 3  # the last metrics show within a second (a quiet change)
    while http.get(f"/v1/services/{service}/instances/a").json()["metrics"]["queue_depth"] != 7:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_heartbeat_can_report_warning(shared_server: Server) -> None:
    http = shared_server.http
    service = unique("warn")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "30s"}])
    beat = http.put(f"/v1/services/{service}/instances/a/heartbeat", json={"status": "warning", "output": "hot"})
    assert beat.json()["status"] == "warning"
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]  # warning is still healthy
