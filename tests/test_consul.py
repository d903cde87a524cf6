"""The Consul-compatible API, driven by py-consul (unmodified, from PyPI) against a real server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

import consul
from tests.backends import HttpBackend
from tests.helpers import instance, unique, wait_for
from tests.server import Server


def client(server: Server, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=server.port, token=token)


def passing_ids(c: consul.Consul, service: str) -> list[str]:
    _, entries = c.health.service(service, passing=True)
    return sorted(e["Service"]["ID"] for e in entries)


def test_a_ttl_service_registered_passed_listed_then_lapsing(shared_server: Server) -> None:
    c, service = client(shared_server), unique("web")
    c.agent.service.register(
        service, service_id=f"{service}-1", address="10.1.0.1", port=8080, tags=["v1"], check=consul.Check.ttl("1s")
    )
    # A TTL check starts critical, as in Consul, until it is passed.
    assert passing_ids(c, service) == []
    c.agent.check.ttl_pass(f"service:{service}-1", "all good")
    assert passing_ids(c, service) == [f"{service}-1"]
    _, entries = c.health.service(service, passing=True)
    entry = entries[0]
    assert entry["Service"]["Address"] == "10.1.0.1" and entry["Service"]["Port"] == 8080
    assert entry["Service"]["Tags"] == ["v1"]
    statuses = {check["CheckID"]: check["Status"] for check in entry["Checks"]}
    assert statuses == {"serfHealth": "passing", f"service:{service}-1": "passing"}
    assert [ch["Output"] for ch in entry["Checks"] if ch["CheckID"] != "serfHealth"] == ["all good"]
    # Not passed again: the TTL lapses and the instance leaves the passing list.
    wait_for(lambda: passing_ids(c, service) == [])
    _, everything = c.health.service(service)
    assert [e["Service"]["ID"] for e in everything] == [f"{service}-1"]  # still registered, critical


def test_catalog_calls_show_what_was_registered(shared_server: Server) -> None:
    c, service = client(shared_server), unique("db")
    c.agent.service.register(service, service_id=f"{service}-a", address="10.2.0.1", port=5432, tags=["primary"])
    shared_server.http.put(
        f"/v1/services/{service}/instances/{service}-b",
        json=instance(address="10.2.0.2", port=5432, version="15.2", capabilities={"gpu": {"memory_gb": 80}}),
    ).raise_for_status()
    _, services = c.catalog.services()
    assert services[service] == ["primary"]
    _, nodes = c.catalog.service(service)
    by_id = {n["ServiceID"]: n for n in nodes}
    assert by_id[f"{service}-a"]["ServiceAddress"] == "10.2.0.1"
    assert by_id[f"{service}-b"]["ServiceMeta"]["version"] == "15.2"
    assert by_id[f"{service}-b"]["ServiceMeta"]["cap_gpu_memory_gb"] == "80"
    assert by_id[f"{service}-a"]["Datacenter"] == "dc1"
    agent_services = c.agent.services()
    assert agent_services[f"{service}-a"]["Service"] == service
    assert c.agent.self()["Config"]["Datacenter"] == "dc1"
    assert c.status.leader() and c.status.peers()
    _, catalog_nodes = c.catalog.nodes()
    assert isinstance(catalog_nodes, list)
    c.agent.service.deregister(f"{service}-a")
    _, nodes = c.catalog.service(service)
    assert [n["ServiceID"] for n in nodes] == [f"{service}-b"]


def test_an_http_check_and_maintenance(shared_server: Server) -> None:
    c, service = client(shared_server), unique("api")
    backend = HttpBackend()
    try:
        check = consul.Check.http(f"http://127.0.0.1:{backend.port}/health", interval="100ms", timeout="1s")
        iid, port = f"{service}-1", backend.port
        c.agent.service.register(service, service_id=iid, address="127.0.0.1", port=port, check=check)
        wait_for(lambda: passing_ids(c, service) == [f"{service}-1"])
        c.agent.service.maintenance(f"{service}-1", True, reason="upgrading")
        assert passing_ids(c, service) == []
        _, checks = c.health.checks(service)
        maintenance = [ch for ch in checks if ch["CheckID"] == f"_service_maintenance:{service}-1"]
        assert maintenance and maintenance[0]["Status"] == "critical" and maintenance[0]["Notes"] == "upgrading"
        c.agent.service.maintenance(f"{service}-1", False)
        assert passing_ids(c, service) == [f"{service}-1"]
        backend.status = 503
        wait_for(lambda: passing_ids(c, service) == [])
    finally:
        backend.stop()


def test_a_blocking_query_wakes_on_a_change(shared_server: Server) -> None:
    c, service = client(shared_server), unique("blocking")
    c.agent.service.register(service, service_id=f"{service}-1", address="10.3.0.1", port=80)
    index, entries = c.health.service(service, passing=True)
    assert len(entries) == 1 and int(index) > 0
    woke: list[tuple[str, list[dict[str, object]]]] = []

    def block() -> None:
        woke.append(c.health.service(service, passing=True, index=index, wait="30s"))

    thread = threading.Thread(target=block)
    started = time.monotonic()
    thread.start()
    time.sleep(0.2)  # let the query block first (an index already passed would answer at once anyway)
    c.agent.service.register(service, service_id=f"{service}-2", address="10.3.0.2", port=80)
    thread.join(10)
    assert woke and len(woke[0][1]) == 2 and int(woke[0][0]) > int(index)
    assert time.monotonic() - started < 10


def test_unsupported_requests_are_clear_4xx(shared_server: Server) -> None:
    http = shared_server.http
    kv = http.put("/v1/kv/some/key", content=b"value")
    assert kv.status_code == 404 and "Consul endpoint" in kv.json()["error"]
    script = http.put(
        "/v1/agent/service/register",
        json={"Name": "x", "Port": 80, "Check": {"Args": ["/bin/true"], "Interval": "10s"}},
    )
    assert script.status_code == 400 and "Check.Args" in script.json()["error"]
    scripted = {"Name": "x", "Port": 80, "Check": {"Script": "/bin/true", "Interval": "10s"}}
    old_script = http.put("/v1/agent/service/register", json=scripted)
    assert old_script.json()["error"] == "Check.Script: this kind of check is not supported by swarm"
    name = unique("consul-name")
    for registration, field in (({"Name": name, "ID": f"{name}:8080"}, "ID"), ({"Name": "a/b"}, "Name")):
        refused = http.put("/v1/agent/service/register", json={**registration, "Port": 80})
        assert refused.status_code == 400 and refused.json()["error"].startswith(f"{field}: "), refused.text
    assert http.get(f"/v1/services/{name}", params={"all": "true"}).json() == []  # nothing was written
    connect = http.put("/v1/agent/service/register", json={"Name": "x", "Port": 80, "Connect": {"Native": True}})
    assert connect.status_code == 400 and "Connect" in connect.json()["error"]
    filtered = http.get("/v1/health/service/x", params={"filter": 'Service.Meta.x == "y"'})
    assert filtered.status_code == 400 and "filter" in filtered.json()["error"]
    assert http.put("/v1/agent/check/pass/service:nobody").status_code == 404
    no_port = http.put("/v1/agent/service/register", json={"Name": "x"})
    assert no_port.status_code == 400 and "Port" in no_port.json()["error"]
    # Keys in any case, as Consul (Go) reads them.
    lower = http.put("/v1/agent/service/register", json={"name": unique("lower"), "port": 81, "address": "10.9.9.9"})
    assert lower.status_code == 200, lower.text


def test_the_consul_token_header_is_checked(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", args=("--acl", "--acl-anonymous", "none"))
    server.start()
    try:
        management = server.http.put("/v1/acl/bootstrap").json()["token"]
        rules = {"rules": {"services": {"acme-": "write"}}}
        scoped = server.http.post("/v1/acl/tokens", json=rules, headers={"X-Consul-Token": management}).json()
        anonymous, acme = client(server), client(server, scoped["token"])
        with pytest.raises(consul.ACLDisabled):  # what py-consul calls a 401: no token where one is needed
            anonymous.agent.service.register("acme-llm", service_id="a1", address="10.0.0.1", port=80)
        with pytest.raises(consul.ACLPermissionDenied):
            acme.agent.service.register("other-llm", service_id="o1", address="10.0.0.1", port=80)
        acme.agent.service.register("acme-llm", service_id="a1", address="10.0.0.1", port=80)
        _, services = acme.catalog.services()
        assert list(services) == ["acme-llm"]
        assert httpx.get(f"{server.url}/v1/health/service/acme-llm").status_code == 401
    finally:
        server.stop()


def test_control_characters_are_refused_through_the_consul_api_too(shared_server: Server) -> None:
    http = shared_server.http
    for body in (
        {"Name": "ctl", "Port": 80, "Address": "10.0.0.1", "Tags": ["bad\u001b[31m"]},
        {"Name": "ctl", "Port": 80, "Address": "10.0.0.1", "Meta": {"k": "bidi\u202e"}},
    ):
        answer = http.put("/v1/agent/service/register", json=body)
        assert answer.status_code == 400, answer.text
    assert http.get("/v1/catalog/service/ctl").json() == []
