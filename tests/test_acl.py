"""Access control on a real server started with --acl: tokens, rules, and nothing written when refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST_EXPIRY
from tests.helpers import instance, wait_for
from tests.server import Server

PROVIDER_A = {"services": {"a-": "write"}, "nodes": {"a-": "write"}, "reports": {"a-": "write"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bootstrap(server: Server) -> str:
    answer = server.http.put("/v1/acl/bootstrap")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def create(server: Server, management: str, rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    answer = server.http.post("/v1/acl/tokens", json={"rules": rules, **fields}, headers=bearer(management))
    assert answer.status_code == 200, answer.text
    created: dict[str, Any] = answer.json()
    return created


def start(tmp_path: Path, *args: str) -> Server:
    server = Server(tmp_path / "data", args=(*FAST_EXPIRY, "--acl", *args))
    server.start()
    return server


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[Server]:
    server = start(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def closed_server(tmp_path: Path) -> Iterator[Server]:
    """ACLs on, and nothing at all for a request without a token."""
    server = start(tmp_path, "--acl-anonymous", "none")
    yield server
    server.stop()


def everything(server: Server, token: str) -> tuple[list[Any], list[Any]]:
    """What the registry holds, read with a token that may read it all."""
    headers = bearer(token)
    services = server.http.get("/v1/services", headers=headers).json()
    instances = [server.http.get(f"/v1/services/{s['name']}?all=true", headers=headers).json() for s in services]
    nodes = server.http.get("/v1/nodes", headers=headers).json()
    return [services, instances], nodes


def test_bootstrap_answers_once_and_survives_kill_9(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        management = bootstrap(server)
        again = server.http.put("/v1/acl/bootstrap")
        assert again.status_code == 403
        assert "already" in again.json()["error"]
        server.kill()
        server.start()
        assert server.http.put("/v1/acl/bootstrap").status_code == 403
        assert server.http.get("/v1/server", headers=bearer(management)).status_code == 200
    finally:
        server.stop()


def test_anonymous_and_unknown_tokens_write_nothing_on_any_write_route(acl_server: Server) -> None:
    management = bootstrap(acl_server)
    http, owner = acl_server.http, bearer(management)
    assert http.put("/v1/services/a-llm/instances/i1", json=instance(), headers=owner).status_code == 200
    assert http.put("/v1/nodes/a-node", json={"address": "10.0.0.9"}, headers=owner).status_code == 200
    token_id = create(acl_server, management, PROVIDER_A)["id"]
    before = everything(acl_server, management)
    writes = [
        ("PUT", "/v1/services/a-llm/instances/i2", instance()),
        ("PUT", "/v1/services/a-llm/instances/i1", instance(port=9)),
        ("DELETE", "/v1/services/a-llm/instances/i1", None),
        ("PUT", "/v1/services/a-llm/instances/i1/heartbeat", {"metrics": {"load": 1}}),
        ("PUT", "/v1/services/a-llm/instances/i1/maintenance", {"enable": True, "reason": "x"}),
        ("PUT", "/v1/nodes/a-node", {"address": "10.0.0.10"}),
        ("DELETE", "/v1/nodes/a-node", None),
        ("POST", "/v1/reports", [{"service": "a-llm", "id": "i1", "ok": False}]),
        ("POST", "/v1/acl/tokens", {"rules": {"operator": "write"}}),
        ("DELETE", f"/v1/acl/tokens/{token_id}", None),
    ]
    for headers, status in (({}, 401), (bearer("not-a-token"), 401), ({"X-Swarm-Token": "nope"}, 401)):
        for method, path, body in writes:
            answer = http.request(method, path, json=body, headers=headers)
            assert answer.status_code == status, (method, path, headers, answer.text)
            assert "error" in answer.json()
            if status == 401:
                assert answer.headers["www-authenticate"].startswith("Bearer")
    assert everything(acl_server, management) == before
    assert [t["id"] for t in http.get("/v1/acl/tokens", headers=owner).json()].count(token_id) == 1
    assert http.get("/v1/services/a-llm/instances/i1", headers=owner).json()["status"] == "passing"
    # A scheme other than Bearer is not silently taken as anonymous.
    basic = http.put("/v1/services/a-llm/instances/i3", json=instance(), headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401 and "Bearer" in basic.json()["error"]


def test_a_provider_token_writes_its_own_records_and_not_another_providers(acl_server: Server) -> None:
    management = bootstrap(acl_server)
    http, owner = acl_server.http, bearer(management)
    a = bearer(create(acl_server, management, PROVIDER_A, description="provider a")["token"])
    b_rules = {"services": {"b-": "write"}, "nodes": {"b-": "write"}}
    b = {"X-Swarm-Token": create(acl_server, management, b_rules)["token"]}  # the other header works too
    assert http.put("/v1/nodes/b-node", json={"address": "10.0.0.2"}, headers=b).status_code == 200
    assert http.put("/v1/services/b-llm/instances/b1", json=instance(), headers=b).status_code == 200
    assert http.put("/v1/nodes/a-node", json={"address": "10.0.0.1"}, headers=a).status_code == 200
    assert http.put("/v1/services/a-llm/instances/a1", json=instance(), headers=a).status_code == 200
    before = everything(acl_server, management)
    refused = [
        ("PUT", "/v1/services/b-llm/instances/a2", instance()),
        ("PUT", "/v1/services/b-llm/instances/b1", instance(address="6.6.6.6")),
        ("DELETE", "/v1/services/b-llm/instances/b1", None),
        ("PUT", "/v1/services/b-llm/instances/b1/maintenance", {"enable": True, "reason": "mine now"}),
        ("PUT", "/v1/services/b-llm/instances/b1/heartbeat", {"status": "critical"}),
        ("PUT", "/v1/nodes/b-node", {"address": "6.6.6.6"}),
        ("DELETE", "/v1/nodes/b-node", None),
        ("PUT", "/v1/services/llm/instances/x", instance()),  # no prefix of a's matches
        ("POST", "/v1/acl/tokens", {"rules": {"operator": "write"}}),
        ("GET", "/v1/acl/tokens", None),
        ("GET", "/v1/server", None),
        ("GET", "/metrics", None),
    ]
    for method, path, body in refused:
        answer = http.request(method, path, json=body, headers=a)
        assert answer.status_code == 403, (method, path, answer.text)
    assert everything(acl_server, management) == before
    # Reads stay open to the anonymous default, and a's own writes went through.
    assert http.get("/v1/services/b-llm").status_code == 200
    assert http.get("/v1/services/a-llm/instances/a1", headers=owner).json()["address"] == "10.0.0.1"
    mine = http.get("/v1/acl/self", headers=a).json()
    assert mine["description"] == "provider a" and mine["rules"] == PROVIDER_A


def test_reports_count_only_for_services_the_token_may_report_on(acl_server: Server) -> None:
    management = bootstrap(acl_server)
    http = acl_server.http
    reader = bearer(create(acl_server, management, {"services": {"": "read"}})["token"])
    a = bearer(create(acl_server, management, PROVIDER_A)["token"])
    http.put("/v1/services/a-llm/instances/i1", json=instance(), headers=bearer(management))
    http.put("/v1/services/b-llm/instances/i1", json=instance(), headers=bearer(management))
    reports = [{"service": "a-llm", "id": "i1", "ok": True}, {"service": "b-llm", "id": "i1", "ok": False}]
    assert http.post("/v1/reports", json=reports).status_code == 401
    assert http.post("/v1/reports", json=reports, headers=reader).status_code == 403
    counted = http.post("/v1/reports", json=reports, headers=a)
    assert counted.status_code == 200 and counted.json() == {"accepted": 1, "ignored": 1}


def test_listings_show_only_what_the_caller_may_read_even_from_the_cache(closed_server: Server) -> None:
    server = closed_server
    management = bootstrap(server)
    http, owner = server.http, bearer(management)
    for service in ("a-llm", "b-llm"):
        assert http.put(f"/v1/services/{service}/instances/i1", json=instance(), headers=owner).status_code == 200
    for node in ("a-node", "b-node"):
        assert http.put(f"/v1/nodes/{node}", json={"address": "10.0.0.3"}, headers=owner).status_code == 200
    a = bearer(create(server, management, {"services": {"a-": "read"}, "nodes": {"a-": "read"}})["token"])
    # Every read is cached by the management token first: the others must not get those answers.
    paths = ["/v1/services", "/v1/services/b-llm", "/v1/services/b-llm/instances/i1", "/v1/nodes", "/v1/nodes/b-node"]
    for _ in range(2):
        for path in paths:
            assert http.get(path, headers=owner).status_code == 200
    assert [s["name"] for s in http.get("/v1/services", headers=owner).json()] == ["a-llm", "b-llm"]
    for _ in range(2):  # the second time from the per-caller cache
        assert [s["name"] for s in http.get("/v1/services", headers=a).json()] == ["a-llm"]
        assert [n["id"] for n in http.get("/v1/nodes", headers=a).json()] == ["a-node"]
        for path in paths[1:]:
            if "nodes" in path and path != "/v1/nodes/b-node":
                continue
            assert http.get(path, headers=a).status_code == 403, path
            assert http.get(path).status_code == 401, path
        assert http.get("/v1/services/a-llm", headers=a).status_code == 200
    assert http.get("/v1/services").status_code == 401
    assert http.get("/healthz").status_code == 200  # liveness stays open for load balancers
    # A blocking query and a watch stream are reads too.
    assert http.get("/v1/services/b-llm?index=1&wait=1s", headers=a).status_code == 403
    assert http.get("/v1/watch?service=b-llm", headers=a).status_code == 403
    with http.stream("GET", "/v1/watch?service=a-llm", headers=a) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith(("id:", "event:"))


def test_a_deleted_token_stops_working_at_once(acl_server: Server) -> None:
    management = bootstrap(acl_server)
    http = acl_server.http
    created = create(acl_server, management, PROVIDER_A)
    a = bearer(created["token"])
    assert http.put("/v1/services/a-llm/instances/i1", json=instance(), headers=a).status_code == 200
    assert http.get("/v1/services/a-llm", headers=a).status_code == 200  # cached for a now
    assert http.delete(f"/v1/acl/tokens/{created['id']}", headers=bearer(management)).json() == {"deleted": True}
    assert http.put("/v1/services/a-llm/instances/i2", json=instance(), headers=a).status_code == 401
    assert http.get("/v1/services/a-llm", headers=a).status_code == 401
    assert http.delete(f"/v1/acl/tokens/{created['id']}", headers=bearer(management)).status_code == 404


def test_secrets_are_shown_once_and_never_logged(tmp_path: Path) -> None:
    server = start(tmp_path, "--log-level", "debug")
    try:
        management = bootstrap(server)
        created = create(server, management, PROVIDER_A)
        http = server.http
        http.put("/v1/services/b-llm/instances/i1", json=instance(), headers=bearer(created["token"]))
        http.put("/v1/services/a-llm/instances/i1", json=instance(), headers=bearer("wrong-secret-xyz"))
        listed = http.get("/v1/acl/tokens", headers=bearer(management))
        for text in (listed.text, http.get("/v1/acl/self", headers=bearer(created["token"])).text):
            assert created["token"] not in text and management not in text
            assert "secret" not in text
        assert {t["id"] for t in listed.json()} >= {created["id"]}
    finally:
        server.stop()
    log = Path(server.log.name).read_text()
    for secret in (management, created["token"], "wrong-secret-xyz"):
        assert secret not in log


def test_tokens_created_on_racing_connections_all_survive_kill_9(acl_server: Server) -> None:
    management = bootstrap(acl_server)

    async def create_many(count: int) -> list[dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=acl_server.url, timeout=10) as http:  # a connection each
                rules = {"services": {f"p{i}-": "write"}}
                answer = await http.post("/v1/acl/tokens", json={"rules": rules}, headers=bearer(management))
                assert answer.status_code == 200, answer.text
                created: dict[str, Any] = answer.json()
                return created

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    created = asyncio.run(create_many(40))
    acl_server.kill()
    acl_server.start()
    http = acl_server.http
    listed = {t["id"] for t in http.get("/v1/acl/tokens", headers=bearer(management)).json()}
    assert {c["id"] for c in created} <= listed
    for i, token in enumerate(created):
        own = http.get("/v1/acl/self", headers=bearer(token["token"]))
        assert own.status_code == 200 and own.json()["rules"] == {"services": {f"p{i}-": "write"}}


def test_bad_rules_are_a_400_naming_the_field(acl_server: Server) -> None:
    management = bootstrap(acl_server)
    for rules, field in (
        ({"services": {"a-": "admin"}}, "services"),
        ({"reports": {"a-": "read"}}, "reports"),
        ({"operator": "root"}, "operator"),
        ({"servics": {}}, "servics"),
        ({"nodes": {"a/b": "write"}}, "nodes"),
    ):
        answer = acl_server.http.post("/v1/acl/tokens", json={"rules": rules}, headers=bearer(management))
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"]


def test_acl_routes_say_so_when_access_control_is_off(server: Server) -> None:
    answer = server.http.put("/v1/acl/bootstrap")
    assert answer.status_code == 400 and "--acl" in answer.json()["error"]


def test_the_cli_bootstraps_creates_lists_and_deletes_tokens(acl_server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "SWARM_ADDR": acl_server.addr, "COLUMNS": "80"}
    env.pop("SWARM_TOKEN", None)

    def swarm(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        run_env = {**env, **({"SWARM_TOKEN": token} if token else {})}
        command = [sys.executable, "-m", "swarm_discovery", *args]
        return subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=30)

    booted = swarm("acl", "bootstrap", "--json")
    assert booted.returncode == 0, booted.stderr
    management = json.loads(booted.stdout)["token"]
    again = swarm("acl", "bootstrap")
    assert again.returncode == 1 and "403" in again.stderr and "Traceback" not in again.stderr
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(PROVIDER_A))
    made = swarm("acl", "token", "create", "--rules", str(rules), "--description", "acme", "--json", token=management)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    listed = swarm("acl", "token", "list", token=management)
    assert listed.returncode == 0 and created["id"] in listed.stdout and "services a-=write" in listed.stdout
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())
    assert created["token"] not in listed.stdout
    refused = swarm("acl", "token", "list", token=created["token"])
    assert refused.returncode == 1 and "403" in refused.stderr
    assert swarm("acl", "token", "delete", created["id"], token=management).returncode == 0
    gone = swarm("acl", "token", "self", token=created["token"])
    assert gone.returncode == 1 and "401" in gone.stderr
    wait_for(lambda: created["id"] not in swarm("acl", "token", "list", token=management).stdout)


def test_with_acls_a_reporter_is_a_token_not_an_address(tmp_path: Path) -> None:
    """Two tokens from one address are two reporters; one token from two addresses is one."""
    server = start(tmp_path, "--ejection-base", "10m")
    try:
        management = bootstrap(server)
        http = server.http
        for i in range(4):
            http.put(f"/v1/services/a-llm/instances/i{i}", json=instance(), headers=bearer(management))
        tokens = [create(server, management, PROVIDER_A)["token"] for _ in range(2)]
        failing = [{"service": "a-llm", "id": "i0", "ok": False}] * 10
        other = httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))

        def listed() -> list[str]:
            return sorted(i["id"] for i in http.get("/v1/services/a-llm").json())

        # One token, from two addresses: one reporter, below the quorum of two.
        for client in (http, other):
            assert client.post("/v1/reports", json=failing, headers=bearer(tokens[0])).status_code == 200
        assert listed() == ["i0", "i1", "i2", "i3"]
        # A second token from the first address: a second reporter, and the instance is ejected.
        assert http.post("/v1/reports", json=failing, headers=bearer(tokens[1])).status_code == 200
        assert listed() == ["i1", "i2", "i3"]
        other.close()
    finally:
        server.stop()


def test_with_acls_instance_caps_and_write_rates_count_by_token(tmp_path: Path) -> None:
    server = start(tmp_path, "--max-instances-per-registrant", "2", "--write-rate", "5")
    try:
        management = bootstrap(server)
        http = server.http
        a, b = (bearer(create(server, management, PROVIDER_A)["token"]) for _ in range(2))
        for iid in ("i1", "i2"):
            assert http.put(f"/v1/services/a-llm/instances/{iid}", json=instance(), headers=a).status_code == 200
        over = http.put("/v1/services/a-llm/instances/i3", json=instance(), headers=a)
        assert over.status_code == 429 and "registrant" in over.json()["error"]
        # Another token from the same address has a cap of its own.
        assert http.put("/v1/services/a-llm/instances/i3", json=instance(), headers=b).status_code == 200
        # a's burst of five writes a second is spent after a few more; b's is its own.
        statuses = [
            http.put("/v1/services/a-llm/instances/i1", json=instance(), headers=a).status_code for _ in range(8)
        ]
        assert 429 in statuses
        assert http.put("/v1/services/a-llm/instances/i3", json=instance(port=81), headers=b).status_code == 200
    finally:
        server.stop()
