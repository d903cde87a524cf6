"""A real Prometheus (Debian's) discovering our instances through http_sd; consul_sd's own requests.

Debian builds Prometheus without Consul service discovery ("Disable Consul SD until its Debian
package is back in shape", its changelog says), so `consul_sd_configs` is checked by making the
requests Prometheus' Consul discovery makes (agent/self, then blocking catalog/services and
health/service queries, health aggregated from the checks as its client does).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import instance, wait_for
from tests.server import Server, free_port

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="tests/setup.sh installs prometheus")


class Prometheus:
    def __init__(self, workdir: Path, config: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, seconds=30)

    def _ready(self) -> bool:
        assert self.process.poll() is None, (self.log.name, Path(self.log.name).read_text())
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def targets(self, job: str) -> list[dict[str, Any]]:
        active = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}).json()["data"]["activeTargets"]
        return [t for t in active if t["scrapePool"] == job]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def prometheus(shared_server: Server, tmp_path: Path) -> Iterator[Prometheus]:
    config = f"""
global: {{scrape_interval: 1h}}
scrape_configs:
  - job_name: http
    http_sd_configs:
      - url: {shared_server.url}/v1/sd/prometheus?service=prom-llm
        refresh_interval: 1s
"""
    server = Prometheus(tmp_path, config)
    yield server
    server.stop()


def addresses(targets: list[dict[str, Any]]) -> list[str]:
    return sorted(t["discoveredLabels"]["__address__"] for t in targets)


def test_prometheus_discovers_exactly_the_healthy_instances(shared_server: Server, prometheus: Prometheus) -> None:
    http = shared_server.http
    for n in (1, 2, 3):
        body = instance(
            address=f"127.0.0.{n}",
            port=9100,
            version="1.4.2",
            tags=["vllm"],
            location={"region": "eu-west", "zone": "eu-west-1a"},
            capabilities={"gpu": {"model": "H100", "memory_gb": 80}},
        )
        http.put(f"/v1/services/prom-llm/instances/p{n}", json=body).raise_for_status()
    http.put("/v1/services/prom-llm/instances/p3/maintenance", json={"enable": True, "reason": "x"}).raise_for_status()
    healthy = ["127.0.0.1:9100", "127.0.0.2:9100"]
    wait_for(lambda: addresses(prometheus.targets("http")) == healthy, seconds=30)
    labels = {t["discoveredLabels"]["__address__"]: t["discoveredLabels"] for t in prometheus.targets("http")}
    first = labels["127.0.0.1:9100"]
    assert first["__meta_swarm_service"] == "prom-llm" and first["__meta_swarm_instance"] == "p1"
    assert first["__meta_swarm_region"] == "eu-west" and first["__meta_swarm_zone"] == "eu-west-1a"
    assert first["__meta_swarm_tags"] == ",vllm," and first["__meta_swarm_version"] == "1.4.2"
    assert first["__meta_swarm_cap_gpu_model"] == "H100" and first["__meta_swarm_cap_gpu_memory_gb"] == "80"
    http.delete("/v1/services/prom-llm/instances/p1").raise_for_status()
    wait_for(lambda: addresses(prometheus.targets("http")) == ["127.0.0.2:9100"], seconds=30)


def _aggregated(checks: list[dict[str, Any]]) -> str:
    """What Consul's Go client's AggregatedStatus makes of an entry's checks (Prometheus reads it)."""
    if any(c["CheckID"].startswith(("_service_maintenance:", "_node_maintenance")) for c in checks):
        return "maintenance"
    statuses = {c["Status"] for c in checks}
    return next((s for s in ("critical", "warning") if s in statuses), "passing")


def test_consul_sd_requests_find_the_healthy_instances_and_wake_on_changes(shared_server: Server) -> None:
    http = shared_server.http
    for n in (1, 2):
        http.put(f"/v1/services/csd-llm/instances/c{n}", json=instance(address=f"127.0.1.{n}")).raise_for_status()
    http.put("/v1/services/csd-llm/instances/c2/maintenance", json={"enable": True, "reason": "x"}).raise_for_status()
    datacenter = http.get("/v1/agent/self").json()["Config"]["Datacenter"]
    services = http.get("/v1/catalog/services", params={"dc": datacenter, "stale": ""})
    assert "csd-llm" in services.json()
    query = {"dc": datacenter, "stale": "", "wait": "30s"}
    entries = http.get("/v1/health/service/csd-llm", params=query)
    index = int(entries.headers["X-Consul-Index"])
    health = {e["Service"]["ID"]: _aggregated(e["Checks"]) for e in entries.json()}
    assert health == {"c1": "passing", "c2": "maintenance"}
    entry = next(e for e in entries.json() if e["Service"]["ID"] == "c1")
    assert entry["Node"]["Datacenter"] == datacenter and entry["Service"]["Address"] == "127.0.1.1"
    http.put("/v1/services/csd-llm/instances/c3", json=instance(address="127.0.1.3")).raise_for_status()
    woke = http.get("/v1/health/service/csd-llm", params={**query, "index": str(index)}, timeout=40)
    assert int(woke.headers["X-Consul-Index"]) > index
    assert sorted(e["Service"]["ID"] for e in woke.json()) == ["c1", "c2", "c3"]


def test_the_sd_endpoint_filters_and_lists_every_service(shared_server: Server) -> None:
    http = shared_server.http
    http.put("/v1/services/sd-a/instances/a1", json=instance(tags=["x"])).raise_for_status()
    http.put("/v1/services/sd-a/instances/a2", json=instance(port=9)).raise_for_status()
    http.put("/v1/services/sd-b/instances/b1", json=instance(capabilities={"models": ["m1", "m2"]})).raise_for_status()
    tagged = http.get("/v1/sd/prometheus", params={"service": "sd-a", "tag": "x"}).json()
    assert [g["labels"]["__meta_swarm_instance"] for g in tagged] == ["a1"]
    every = http.get("/v1/sd/prometheus").json()
    ids = {g["labels"]["__meta_swarm_instance"] for g in every}
    assert {"a1", "a2", "b1"} <= ids
    b1 = next(g for g in every if g["labels"]["__meta_swarm_instance"] == "b1")
    assert b1["labels"]["__meta_swarm_cap_models"] == "m1,m2" and b1["targets"] == ["10.0.0.1:8000"]
    bad = http.get("/v1/sd/prometheus", params={"service": "bad name"})
    assert bad.status_code == 400 and "service" in bad.json()["error"]
    selected = http.get("/v1/sd/prometheus", params={"service": "sd-a", "selector": "instance.port == 9"}).json()
    assert [g["labels"]["__meta_swarm_instance"] for g in selected] == ["a2"]
