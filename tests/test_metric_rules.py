"""Metric checks: CEL rules over live metrics, judged on every heartbeat that carries metrics."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from swarm_discovery.sdk.client import Client

from .helpers import ids, put, unique, wait_for
from .server import Server
from .test_cli import swarm
from .test_scrape import VLLM, MetricsServer

GPU = {
    "type": "metric",
    "name": "gpu",
    "warning": "instance.metrics.gpu_temp_c > 85.0",
    "critical": "instance.metrics.gpu_temp_c > 92.0 || instance.metrics.xid_errors > 0.0",
}


def beat(http: httpx.Client, service: str, iid: str, **metrics: float) -> dict[str, Any]:
    response = http.put(f"/v1/services/{service}/instances/{iid}/heartbeat", json={"metrics": metrics})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def check(http: httpx.Client, service: str, iid: str, name: str) -> dict[str, Any]:
    states = http.get(f"/v1/services/{service}/instances/{iid}/checks").json()
    return next(s for s in states if s["name"] == name)  # type: ignore[no-any-return]


def test_thresholds_take_an_instance_through_warning_to_critical_and_back(shared_server: Server) -> None:
    http, service = shared_server.http, unique("gpu")
    rule = {**GPU, "failures_before_critical": 2, "failures_before_warning": 1, "success_before_passing": 2}
    put(http, service, "a", checks=[rule])
    assert check(http, service, "a", "gpu")["status"] == "passing"

    assert beat(http, service, "a", gpu_temp_c=70.0, xid_errors=0.0)["status"] == "passing"
    assert beat(http, service, "a", gpu_temp_c=88.0, xid_errors=0.0)["status"] == "warning"
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]  # warning: still listed
    state = check(http, service, "a", "gpu")
    assert state["output"] == "warning: gpu_temp_c=88, xid_errors=0 (instance.metrics.gpu_temp_c > 85.0)"

    # One critical reading is a spike: failures_before_critical is 2.
    assert beat(http, service, "a", gpu_temp_c=95.0, xid_errors=0.0)["status"] == "warning"
    assert beat(http, service, "a", gpu_temp_c=95.0, xid_errors=0.0)["status"] == "critical"
    assert ids(http.get(f"/v1/services/{service}")) == []
    assert "gpu_temp_c=95" in check(http, service, "a", "gpu")["output"]

    # Leaving critical takes success_before_passing readings below it.
    assert beat(http, service, "a", gpu_temp_c=60.0, xid_errors=0.0)["status"] == "critical"
    assert beat(http, service, "a", gpu_temp_c=60.0, xid_errors=0.0)["status"] == "passing"
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]

    # The other half of the critical expression fires on its own.
    beat(http, service, "a", gpu_temp_c=60.0, xid_errors=1.0)
    assert beat(http, service, "a", gpu_temp_c=60.0, xid_errors=1.0)["status"] == "critical"
    assert "xid_errors=1" in check(http, service, "a", "gpu")["output"]


def test_a_reading_that_stays_bad_counts_each_heartbeat(shared_server: Server) -> None:
    """Unchanged metrics are still a new reading: a GPU that stays hot goes critical."""
    http, service = shared_server.http, unique("steady")
    put(http, service, "a", checks=[{**GPU, "failures_before_critical": 3}])
    statuses = [beat(http, service, "a", gpu_temp_c=99.0, xid_errors=0.0)["status"] for _ in range(3)]
    assert statuses == ["passing", "passing", "critical"]


def test_rules_combine_with_other_checks_and_maintenance(shared_server: Server) -> None:
    http, service = shared_server.http, unique("combine")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "60s"}, GPU])
    assert beat(http, service, "a", gpu_temp_c=88.0)["status"] == "warning"
    reply = http.put(
        f"/v1/services/{service}/instances/a/heartbeat",
        json={"status": "critical", "output": "disk full", "metrics": {"gpu_temp_c": 88.0}},
    )
    assert reply.json()["status"] == "critical"  # the worst of the TTL check and the rule
    http.put(f"/v1/services/{service}/instances/a/maintenance", json={"enable": True})
    assert beat(http, service, "a", gpu_temp_c=99.0)["status"] == "maintenance"


def test_a_registration_with_metrics_is_judged_at_once(shared_server: Server) -> None:
    http, service = shared_server.http, unique("born-hot")
    response = put(http, service, "a", checks=[GPU], metrics={"gpu_temp_c": 99.0})
    assert response.json()["status"] == "critical"


def test_a_rule_reading_a_metric_never_sent_does_not_fire_and_says_so(shared_server: Server) -> None:
    http, service = shared_server.http, unique("typo")
    put(http, service, "a", checks=[{"type": "metric", "critical": "instance.metrics.gpu_tmp_c > 92.0"}])
    assert beat(http, service, "a", gpu_temp_c=99.0)["status"] == "passing"
    assert "gpu_tmp_c=missing" in check(http, service, "a", "metric")["output"]


def test_node_metrics_make_the_nodes_instances_critical(shared_server: Server) -> None:
    http, service, node = shared_server.http, unique("on-node"), unique("gpu-node")
    rule = {"type": "metric", "name": "temp", "critical": "node.metrics.gpu_temp_c > 92.0"}
    assert http.put(f"/v1/nodes/{node}", json={"checks": [rule]}).status_code == 200
    put(http, service, "a", node=node)
    put(http, service, "b")
    reply = http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"gpu_temp_c": 95.0}})
    assert reply.status_code == 200 and reply.json()["status"] == "critical"
    assert reply.json()["metrics"] == {"gpu_temp_c": 95.0}
    assert ids(http.get(f"/v1/services/{service}")) == ["b"]
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"gpu_temp_c": 60.0}})
    assert sorted(ids(http.get(f"/v1/services/{service}"))) == ["a", "b"]
    # Metrics alone are a quiet change: readers see them within a second.
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"gpu_temp_c": 61.0}})
    wait_for(lambda: http.get(f"/v1/nodes/{node}").json()["metrics"] == {"gpu_temp_c": 61.0}, 3)


def test_an_instance_rule_may_read_its_nodes_metrics(shared_server: Server) -> None:
    http, service, node = shared_server.http, unique("reads-node"), unique("n")
    http.put(f"/v1/nodes/{node}", json={})
    rule = {"type": "metric", "critical": "instance.metrics.queue > 10.0 && node.metrics.mem_free_gb < 1.0"}
    put(http, service, "a", node=node, checks=[rule])
    assert beat(http, service, "a", queue=50.0)["status"] == "passing"  # node metrics not sent yet
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"mem_free_gb": 0.5}})
    assert http.get(f"/v1/services/{service}/instances/a").json()["status"] == "critical"
    assert check(http, service, "a", "metric")["output"].startswith("critical: queue=50, node.mem_free_gb=0.5 (")
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"mem_free_gb": 8.0}})
    assert http.get(f"/v1/services/{service}/instances/a").json()["status"] == "passing"


def test_nodes_take_ttl_checks_that_lapse_and_renew(shared_server: Server) -> None:
    http, service, node = shared_server.http, unique("ttl-node"), unique("n")
    reply = http.put(f"/v1/nodes/{node}", json={"checks": [{"type": "ttl", "ttl": "300ms"}]})
    assert reply.status_code == 200, reply.text
    put(http, service, "a", node=node)
    wait_for(lambda: http.get(f"/v1/nodes/{node}").json()["status"] == "critical")
    assert ids(http.get(f"/v1/services/{service}")) == []
    assert http.put(f"/v1/nodes/{node}/heartbeat").json()["status"] == "passing"
    assert ids(http.get(f"/v1/services/{service}")) == ["a"]


def test_heartbeat_of_an_unknown_node_is_404(shared_server: Server) -> None:
    assert shared_server.http.put(f"/v1/nodes/{unique('nobody')}/heartbeat").status_code == 404


@pytest.mark.parametrize("stale_status", ["warning", "critical"])
def test_stale_metrics_are_not_judged_as_current(shared_server: Server, stale_status: str) -> None:
    http, service = shared_server.http, unique("stale")
    put(http, service, "a", checks=[{**GPU, "max_age": "400ms", "stale_status": stale_status}])
    beat(http, service, "a", gpu_temp_c=60.0)
    wait_for(lambda: check(http, service, "a", "gpu")["status"] == stale_status)
    assert check(http, service, "a", "gpu")["output"] == "stale: no metrics for 400ms"
    assert beat(http, service, "a", gpu_temp_c=60.0)["status"] == "passing"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"critical": "instance.metrics.x >"}, "checks[0].critical: ERROR: <input>:1:21: Syntax error"),
        ({"warning": "instance.metrics.q > 2 * instance.capacity.c"}, "checks[0].warning: No matching overloads"),
        ({}, "checks[0]: a metric check needs `critical`, `warning` or `scrape`"),
        ({"critical": "x" * 2049}, "checks[0].critical"),
        ({"critical": "instance.metrics.x > 1.0", "max_age": "soon"}, "checks[0].max_age"),
        ({"critical": "instance.metrics.x > 1.0", "stale_status": "bad"}, "checks[0].stale_status"),
        ({"critical": "instance.metrics.x > 1.0", "scrape": "ftp://x/metrics"}, "checks[0].scrape"),
    ],
)
def test_bad_rules_are_refused_with_nothing_written(shared_server: Server, rule: dict[str, Any], expected: str) -> None:
    http, service = shared_server.http, unique("bad-rule")
    response = http.put(
        f"/v1/services/{service}/instances/a",
        json={"address": "10.0.0.1", "port": 80, "checks": [{"type": "metric", **rule}]},
    )
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert http.get(f"/v1/services/{service}/instances/a").status_code == 404
    node = http.put(f"/v1/nodes/{unique('bad')}", json={"checks": [{"type": "metric", **rule}]})
    assert node.status_code == 400 and expected in node.json()["error"]


def test_metric_changes_that_keep_the_status_do_not_wake_watchers_more_often(shared_server: Server) -> None:
    """A rule's output changes with every reading; only metrics themselves move the index, at most
    once a second per instance, as without rules."""
    http, service = shared_server.http, unique("quiet")
    put(http, service, "a", checks=[GPU])
    first = http.get(f"/v1/services/{service}/instances/a").json()["index"]
    seen = set()
    started = time.monotonic()
    for value in range(20):
        beat(http, service, "a", gpu_temp_c=50.0 + value / 10)
        seen.add(http.get(f"/v1/services/{service}/instances/a").json()["index"])
    assert check(http, service, "a", "gpu")["output"].startswith("within limits")
    assert len(seen - {first}) <= time.monotonic() - started + 2, seen


QUEUE = {
    "type": "metric",
    "name": "queue",
    "critical": "instance.metrics.queue_depth > 2.0 * instance.capacity.max_concurrency",
}


def test_service_rules_apply_to_instances_now_and_registered_later(shared_server: Server) -> None:
    http, service = shared_server.http, unique("fleet")
    put(http, service, "before", capacity={"max_concurrency": 8.0}, checks=[{"type": "ttl", "ttl": "60s"}])
    reply = http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["rules"][0]["critical"] == QUEUE["critical"]
    put(http, service, "after", capacity={"max_concurrency": 4.0})

    assert beat(http, service, "before", queue_depth=12.0)["status"] == "passing"  # 12 <= 2 * 8
    assert beat(http, service, "after", queue_depth=12.0)["status"] == "critical"  # 12 > 2 * 4
    assert ids(http.get(f"/v1/services/{service}")) == ["before"]
    names = [s["name"] for s in http.get(f"/v1/services/{service}/instances/before/checks").json()]
    assert names == ["ttl", "queue"]  # its own checks first, then the service's
    # The instance's own record is unchanged: the rules are the service's, not copied into it.
    assert [c["type"] for c in http.get(f"/v1/services/{service}/instances/before").json()["checks"]] == ["ttl"]
    assert http.get(f"/v1/services/{service}/rules").json()["rules"][0]["name"] == "queue"

    assert http.delete(f"/v1/services/{service}/rules").status_code == 200
    assert sorted(ids(http.get(f"/v1/services/{service}"))) == ["after", "before"]
    assert [s["name"] for s in http.get(f"/v1/services/{service}/instances/after/checks").json()] == []
    assert http.get(f"/v1/services/{service}/rules").json() == {"service": service, "rules": []}
    assert http.delete(f"/v1/services/{service}/rules").status_code == 404


def test_replacing_service_rules_keeps_the_instances_own_check_state(shared_server: Server) -> None:
    http, service = shared_server.http, unique("keep")
    put(http, service, "a", checks=[{"type": "ttl", "ttl": "60s"}])
    http.put(f"/v1/services/{service}/instances/a/heartbeat", json={"status": "warning", "output": "mine"})
    http.put(f"/v1/services/{service}/rules", json={"rules": [GPU]})
    http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE, GPU]})
    states = http.get(f"/v1/services/{service}/instances/a/checks").json()
    assert [(s["name"], s["status"]) for s in states] == [("ttl", "warning"), ("queue", "passing"), ("gpu", "passing")]
    assert states[0]["output"] == "mine"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"rules": [{"type": "ttl", "ttl": "5s"}]}, "rules[0].type: service rules are metric checks"),
        ({"rules": [{"type": "metric", "scrape": "http://10.0.0.1/metrics"}]}, "rules[0].scrape: "),
        ({"rules": [{"type": "metric", "critical": "instance.metrics.x >"}]}, "rules[0].critical"),
        ({"rules": [{"type": "metric", "critical": "instance.metrics.x > 1.0", "max_age": "-1s"}]}, "rules[0].max_age"),
        ({"rules": [{"type": "metric", "critical": "instance.metrics.x > 1.0"}] * 17}, "rules"),
        ({"rule": []}, "rule"),
    ],
)
def test_bad_service_rules_are_refused(shared_server: Server, body: dict[str, Any], expected: str) -> None:
    http, service = shared_server.http, unique("bad-rules")
    response = http.put(f"/v1/services/{service}/rules", json=body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert http.get(f"/v1/services/{service}/rules").json()["rules"] == []


def test_racing_rule_writes_survive_kill_9(server: Server) -> None:
    """Writers on several connections race; what the server shows before `kill -9` it shows after,
    and it is one of the acknowledged writes, applied to the instances as well."""
    http, service = server.http, "racing-rules"
    put(http, service, "a")

    async def race() -> list[float]:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as one,
            httpx.AsyncClient(base_url=server.url, timeout=30) as other,
        ):

            async def write(client: httpx.AsyncClient, limit: float) -> float:
                rule = {"type": "metric", "name": "q", "critical": f"instance.metrics.q > {limit}"}
                reply = await client.put(f"/v1/services/{service}/rules", json={"rules": [rule]})
                assert reply.status_code == 200, reply.text
                return limit

            return await asyncio.gather(*(write((one, other)[i % 2], float(i)) for i in range(40)))

    acknowledged = {f"instance.metrics.q > {limit}" for limit in asyncio.run(race())}
    before = http.get(f"/v1/services/{service}/rules").json()
    assert before["rules"][0]["critical"] in acknowledged
    server.kill()
    server.start()
    assert http.get(f"/v1/services/{service}/rules").json() == before
    limit = float(before["rules"][0]["critical"].rsplit(" ", 1)[1])
    assert beat(http, service, "a", q=limit + 1)["status"] == "critical"
    assert beat(http, service, "a", q=limit)["status"] == "passing"


def test_rules_and_node_heartbeats_from_the_cli_and_the_sdk(server: Server, swarm_env: dict[str, str]) -> None:
    service, node = "cli-rules", "cli-node"
    swarm(swarm_env, "rules", "set", service, "--name", "hot", "--critical", "instance.metrics.t > 90.0")
    assert "instance.metrics.t > 90.0" in swarm(swarm_env, "rules", "show", service).stdout
    bad = swarm(swarm_env, "rules", "set", service, "--critical", "instance.metrics.t > 2 * 1.5", ok=False)
    assert "Traceback" not in bad.stderr and "error: 400: rules[0].critical" in bad.stderr
    swarm(swarm_env, "node", "register", node)
    swarm(swarm_env, "register", service, "--id", "a", "--address", "10.0.0.1", "--port", "80", "--node", node)
    swarm(swarm_env, "heartbeat", service, "a", "--metric", "t=95")
    checks = swarm(swarm_env, "checks", service, "a", "--json").stdout
    assert json.loads(checks)[0]["status"] == "critical" and "t=95" in checks
    assert "critical" in swarm(swarm_env, "checks", service, "a").stdout
    renewed = json.loads(swarm(swarm_env, "node", "heartbeat", node, "--metric", "load=0.5", "--json").stdout)
    assert renewed["metrics"] == {"load": 0.5}
    swarm(swarm_env, "rules", "clear", service)
    assert "has no rules" in swarm(swarm_env, "rules", "show", service).stdout

    with Client(server.url) as client:
        rules = client.set_rules(service, [{"type": "metric", "name": "q", "warning": "instance.metrics.q > 1.0"}])
        assert [r.name for r in client.rules(service).rules] == ["q"] == [r.name for r in rules.rules]
        assert client.heartbeat(service, "a", metrics={"q": 5.0}).status == "warning"
        assert client.node_heartbeat(node, metrics={"load": 2.0}).metrics == {"load": 2.0}
        client.clear_rules(service)
        assert client.rules(service).rules == []


def test_a_scraped_vllm_endpoint_drives_a_rule(shared_server: Server) -> None:
    http, service = shared_server.http, unique("vllm")
    endpoint = MetricsServer()
    try:
        rule = {
            "type": "metric",
            "name": "vllm",
            "scrape": endpoint.url,
            "interval": "200ms",
            "warning": "instance.metrics.vllm_num_requests_waiting > 50.0",
            "critical": "instance.metrics.vllm_gpu_cache_usage_perc > 0.98",
        }
        put(http, service, "a", checks=[rule])
        instance_path = f"/v1/services/{service}/instances/a"
        wait_for(lambda: http.get(instance_path).json().get("metrics", {}).get("vllm_num_requests_waiting") == 3.0)
        assert check(http, service, "a", "vllm")["status"] == "passing"

        endpoint.body = VLLM.replace("} 3.0\n", "} 80.0\n").encode()  # 80 requests waiting
        wait_for(lambda: check(http, service, "a", "vllm")["status"] == "warning")
        assert "vllm_num_requests_waiting=80" in check(http, service, "a", "vllm")["output"]
        assert ids(http.get(f"/v1/services/{service}")) == ["a"]

        endpoint.body = VLLM.replace("} 0.4375\n", "} 0.99\n").encode()  # the KV cache is full
        wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == [])
        assert check(http, service, "a", "vllm")["status"] == "critical"

        endpoint.body = VLLM.encode()
        wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == ["a"])
        endpoint.status = 503  # a scrape that fails is a failed evaluation
        wait_for(lambda: check(http, service, "a", "vllm")["output"].startswith("scrape failed: scrape http"))
        assert check(http, service, "a", "vllm")["status"] == "critical"
    finally:
        endpoint.stop()


def test_a_scrape_without_rules_only_gathers_metrics(shared_server: Server) -> None:
    http, service = shared_server.http, unique("gather")
    endpoint = MetricsServer()
    try:
        put(http, service, "a", checks=[{"type": "metric", "name": "m", "scrape": endpoint.url, "interval": "200ms"}])
        path = f"/v1/services/{service}/instances/a"
        wait_for(lambda: http.get(path).json().get("metrics", {}).get("vllm_gpu_cache_usage_perc") == 0.4375)
        state = check(http, service, "a", "m")
        assert state["status"] == "passing" and state["output"].startswith("scraped ")
        endpoint.status = 503
        wait_for(lambda: check(http, service, "a", "m")["status"] == "critical")
        endpoint.status = 200
        wait_for(lambda: check(http, service, "a", "m")["status"] == "passing")
    finally:
        endpoint.stop()


# --- what a review found ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "'llama' in instance.capabilities.models && instance.metrics.q > 1.0",
        "instance.meta.role.contains('gpu')",
        "instance.port * 2 > 3",
        "size(instance.tags) > 2 || instance.tags.exists(t, t == 'x')",
    ],
)
def test_rules_over_fields_some_records_lack_are_accepted(shared_server: Server, expression: str) -> None:
    response = shared_server.http.put(
        f"/v1/services/{unique('fields')}/instances/a",
        json={"address": "10.0.0.1", "port": 80, "checks": [{"type": "metric", "critical": expression}]},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"critical": "instance.weight * 2.0 > 1.0"}, "checks[0].critical: No matching overloads"),
        ({"critical": "1 / 0 > 1"}, "checks[0].critical: divide by zero"),
        ({"critical": "instance.metrics.q + 1.0"}, "checks[0].critical: gives a double, not true or false"),
        ({"critical": "instance.metrics.q > 1.0", "ttl": "5s"}, "checks[0].ttl: metric checks do not take it"),
        ({"critical": "instance.metrics.q > 1.0", "stale_status": "passing"}, "checks[0].stale_status"),
    ],
)
def test_rules_that_could_never_fire_are_refused(shared_server: Server, rule: dict[str, Any], expected: str) -> None:
    response = shared_server.http.put(
        f"/v1/services/{unique('never')}/instances/a",
        json={"address": "10.0.0.1", "port": 80, "checks": [{"type": "metric", **rule}]},
    )
    assert response.status_code == 400 and expected in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"type": "ttl", "ttl": "5s", "max_age": "3s"}, "checks[0].max_age: only metric checks take it"),
        ({"type": "http", "url": "http://10.0.0.1/", "critical": "true"}, "checks[0].critical: only metric"),
    ],
)
def test_metric_fields_on_other_checks_are_refused(shared_server: Server, check: dict[str, Any], expected: str) -> None:
    response = shared_server.http.put(
        f"/v1/services/{unique('fields')}/instances/a", json={"address": "10.0.0.1", "port": 80, "checks": [check]}
    )
    assert response.status_code == 400 and expected in response.json()["error"], response.text


def test_a_nodes_rules_read_node_only(shared_server: Server) -> None:
    rule = {"type": "metric", "critical": "instance.metrics.q > 1.0"}
    response = shared_server.http.put(f"/v1/nodes/{unique('n')}", json={"checks": [rule]})
    assert response.status_code == 400 and "a node's rules read `node`" in response.json()["error"]


def test_a_metric_check_with_nothing_to_do_is_refused_after_a_gathering_one(shared_server: Server) -> None:
    http = shared_server.http
    gather = {"type": "metric", "scrape": "http://10.0.0.1:9/metrics"}
    put(http, unique("gather"), "a", checks=[gather])
    response = http.put(
        f"/v1/services/{unique('empty')}/instances/a",
        json={"address": "10.0.0.1", "port": 80, "checks": [{"type": "metric"}]},
    )
    assert response.status_code == 400, response.text


def test_writing_the_same_rules_again_keeps_their_state(shared_server: Server) -> None:
    http, service = shared_server.http, unique("same")
    http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE]})
    put(http, service, "a", capacity={"max_concurrency": 1.0})
    assert beat(http, service, "a", queue_depth=9.0)["status"] == "critical"
    http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE]})
    assert http.get(f"/v1/services/{service}/instances/a").json()["status"] == "critical"
    http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE, GPU]})  # one added: the other stays
    assert [s["status"] for s in http.get(f"/v1/services/{service}/instances/a/checks").json()] == [
        "critical",
        "passing",
    ]


def test_empty_rules_clear_and_duplicate_names_are_refused(shared_server: Server) -> None:
    http, service = shared_server.http, unique("empty-rules")
    http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE]})
    assert http.put(f"/v1/services/{service}/rules", json={"rules": []}).json()["rules"] == []
    assert http.delete(f"/v1/services/{service}/rules").status_code == 404  # nothing left to clear
    twice = http.put(f"/v1/services/{service}/rules", json={"rules": [QUEUE, QUEUE]})
    assert twice.status_code == 400 and "two rules named 'queue'" in twice.json()["error"]


def test_going_stale_never_improves_a_status_and_starts_the_count_again(shared_server: Server) -> None:
    http, service = shared_server.http, unique("stale-hot")
    put(http, service, "a", checks=[{**GPU, "max_age": "300ms", "success_before_passing": 2}])
    assert beat(http, service, "a", gpu_temp_c=99.0)["status"] == "critical"
    wait_for(lambda: check(http, service, "a", "gpu")["output"].startswith("stale"))
    assert check(http, service, "a", "gpu")["status"] == "critical"  # silent and hot: still critical
    assert beat(http, service, "a", gpu_temp_c=50.0)["status"] == "critical"  # one good reading of two
    assert beat(http, service, "a", gpu_temp_c=50.0)["status"] == "passing"


def test_node_heartbeats_that_change_nothing_move_no_index(shared_server: Server) -> None:
    http, node = shared_server.http, unique("steady-node")
    http.put(f"/v1/nodes/{node}", json={"checks": [{"type": "ttl", "ttl": "60s"}]})
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"load": 1.0}})
    wait_for(lambda: http.get(f"/v1/nodes/{node}").json()["metrics"] == {"load": 1.0}, 3)
    first = int(http.get(f"/v1/nodes/{node}").headers["x-swarm-index"])
    for _ in range(4):
        http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"load": 1.0}})
    assert int(http.get(f"/v1/nodes/{node}").headers["x-swarm-index"]) == first


def test_an_instance_critical_from_its_nodes_metrics_recovers_when_the_node_goes(shared_server: Server) -> None:
    http, service, node = shared_server.http, unique("orphan"), unique("n")
    http.put(f"/v1/nodes/{node}", json={})
    put(http, service, "a", node=node, checks=[{"type": "metric", "critical": "node.metrics.t > 90.0"}])
    http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"t": 99.0}})
    assert http.get(f"/v1/services/{service}/instances/a").json()["status"] == "critical"
    http.delete(f"/v1/nodes/{node}")
    assert http.get(f"/v1/services/{service}/instances/a").json()["status"] == "passing"


def test_a_nodes_scraped_metrics_reach_its_instances(shared_server: Server) -> None:
    http, service, node = shared_server.http, unique("scraped-node"), unique("n")
    endpoint = MetricsServer()
    try:
        endpoint.body = b"# TYPE temp gauge\ntemp 99.0\n"
        rule = {"type": "metric", "scrape": endpoint.url, "interval": "200ms", "critical": "node.metrics.temp > 90.0"}
        assert http.put(f"/v1/nodes/{node}", json={"checks": [rule]}).status_code == 200
        put(http, service, "a", node=node)
        wait_for(lambda: ids(http.get(f"/v1/services/{service}")) == [])
        assert http.get(f"/v1/nodes/{node}").json()["status"] == "critical"
    finally:
        endpoint.stop()


def test_a_failing_scrape_stays_failed_whatever_heartbeats_say(shared_server: Server) -> None:
    http, service = shared_server.http, unique("scrape-down")
    endpoint = MetricsServer()
    try:
        endpoint.status = 503
        scrape = {"type": "metric", "name": "m", "scrape": endpoint.url, "interval": "200ms"}
        put(http, service, "a", checks=[{"type": "ttl", "ttl": "60s"}, scrape, GPU])
        wait_for(lambda: check(http, service, "a", "m")["status"] == "critical")
        for _ in range(3):
            beat(http, service, "a", gpu_temp_c=50.0)
        assert check(http, service, "a", "m")["status"] == "critical"
        assert check(http, service, "a", "gpu")["status"] == "passing"
    finally:
        endpoint.stop()


def test_what_a_scrape_no_longer_reads_leaves_the_metrics(shared_server: Server) -> None:
    http, service = shared_server.http, unique("drift")
    endpoint = MetricsServer()
    try:
        endpoint.body = b"a_one 1.0\n"
        put(http, service, "a", checks=[{"type": "metric", "scrape": endpoint.url, "interval": "200ms"}])
        path = f"/v1/services/{service}/instances/a"
        beat(http, service, "a", own=5.0)
        wait_for(lambda: http.get(path).json().get("metrics") == {"own": 5.0, "a_one": 1.0})
        endpoint.body = b"a_two 2.0\n"
        wait_for(lambda: http.get(path).json().get("metrics") == {"own": 5.0, "a_two": 2.0})
        endpoint.body = "".join(f"m{i} {i}.0\n" for i in range(64)).encode()
        wait_for(lambda: "m62" in http.get(path).json().get("metrics", {}))
        assert len(http.get(path).json()["metrics"]) == 64  # the heartbeat's first, then the scrape's
    finally:
        endpoint.stop()
