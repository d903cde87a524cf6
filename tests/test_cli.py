"""The `swarm` command line against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Server


def swarm(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "swarm_discovery", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode == 0) == ok, result.stderr + result.stdout
    return result


def test_register_query_and_deregister(server: Server, swarm_env: dict[str, str], tmp_path: Path) -> None:
    swarm(
        swarm_env,
        "register",
        "llm",
        "--id",
        "llm-1",
        "--address",
        "10.8.0.7",
        "--port",
        "8000",
        "--tag",
        "vllm",
        "--meta",
        "owner=team-a",
        "--capability",
        "gpu.memory_gb=80",
        "--capability",
        "gpu.model=H100",
        "--region",
        "eu-west",
        "--ttl",
        "15s",
    )
    spec = tmp_path / "instance.json"
    spec.write_text(json.dumps({"address": "10.8.0.8", "port": 8000, "capabilities": {"gpu": {"memory_gb": 24}}}))
    swarm(swarm_env, "register", "llm", "--id", "llm-2", "-f", str(spec))

    listed = json.loads(
        swarm(swarm_env, "instances", "llm", "--selector", "instance.capabilities.gpu.memory_gb >= 80", "--json").stdout
    )
    assert [i["id"] for i in listed] == ["llm-1"]
    first = listed[0]
    assert first["meta"] == {"owner": "team-a"} and first["capabilities"]["gpu"] == {"memory_gb": 80, "model": "H100"}
    assert [(c["type"], c["ttl"]) for c in first["checks"]] == [("ttl", "15s")]
    # defaulted fields are printed too, so that scripts can rely on them
    assert (first["weight"], first["protocol"], first["tags"]) == (100, "http", ["vllm"])

    table = swarm(swarm_env, "instances", "llm").stdout
    assert "llm-1" in table and "llm-2" in table
    catalog = json.loads(swarm(swarm_env, "services", "--json").stdout)
    assert catalog == [{"name": "llm", "instances": 2, "healthy": 2, "tags": ["vllm"], "versions": []}]
    assert "llm" in swarm(swarm_env, "services").stdout

    swarm(swarm_env, "deregister", "llm", "llm-2")
    assert [i["id"] for i in json.loads(swarm(swarm_env, "instances", "llm", "--json").stdout)] == ["llm-1"]


def test_errors_are_clear(server: Server, swarm_env: dict[str, str]) -> None:
    result = swarm(swarm_env, "register", "llm", "--id", "x", "--address", "a", "--port", "0", ok=False)
    assert "port" in result.stderr
    result = swarm(swarm_env, "instances", "llm", "--selector", "instance.port >=", ok=False)
    assert "selector" in result.stderr and "Syntax error" in result.stderr
    result = swarm(swarm_env, "deregister", "llm", "nope", ok=False)
    assert "404" in result.stderr
    down = {**swarm_env, "SWARM_ADDR": "127.0.0.1:1"}
    assert "cannot reach" in swarm(down, "services", ok=False).stderr


def test_nodes_maintenance_and_watch(server: Server, swarm_env: dict[str, str]) -> None:
    server.http.put(
        "/v1/nodes/gpu-7",
        json={"kind": "compute", "resources": {"gpus": [{"model": "H100", "memory_gb": 80, "count": 8}]}},
    )
    nodes = json.loads(swarm(swarm_env, "nodes", "--json").stdout)
    assert [n["id"] for n in nodes] == ["gpu-7"]
    assert "8x H100 80GB" in swarm(swarm_env, "nodes").stdout
    swarm(swarm_env, "register", "llm", "--id", "a", "--address", "10.0.0.1", "--port", "80")
    assert "maintenance" in swarm(swarm_env, "maintenance", "llm", "a", "--reason", "swap").stdout
    watcher = subprocess.Popen(
        [sys.executable, "-m", "swarm_discovery", "watch", "llm", "--all", "--json"],
        env=swarm_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        snapshot = json.loads(watcher.stdout.readline())
        assert snapshot["event"] == "snapshot" and snapshot["data"][0]["status"] == "maintenance"
        swarm(swarm_env, "maintenance", "llm", "a", "--disable")
        change = json.loads(watcher.stdout.readline())
        assert (change["event"], change["data"]["status"]) == ("put", "passing")
    finally:
        watcher.terminate()
        watcher.wait()


def test_register_with_active_checks_and_list_them(server: Server, swarm_env: dict[str, str]) -> None:
    from tests.backends import TcpBackend

    backend = TcpBackend()
    try:
        swarm(
            swarm_env,
            "register",
            "db",
            "--id",
            "d1",
            "--address",
            "127.0.0.1",
            "--port",
            str(backend.port),
            "--check",
            f"tcp://{backend.target}",
            "--check",
            "http://127.0.0.1:1/health",
            "--check-interval",
            "200ms",
            "--check-timeout",
            "300ms",
        )
        registered = json.loads(swarm(swarm_env, "instances", "db", "--all", "--json").stdout)[0]
        assert [c["type"] for c in registered["checks"]] == ["tcp", "http"]
        assert registered["checks"][0]["interval"] == "200ms"
        deadline = time.monotonic() + 5
        while True:
            checks = json.loads(swarm(swarm_env, "checks", "db", "d1", "--json").stdout)
            if [c["status"] for c in checks] == ["passing", "critical"] and "Cannot connect" in checks[1]["output"]:
                break
            assert time.monotonic() < deadline, checks
            time.sleep(0.1)
        table = swarm(swarm_env, "checks", "db", "d1").stdout
        assert "tcp" in table and "Cannot connect" in table
        shown = swarm(swarm_env, "instances", "db", "--all").stdout
        assert "critical" in shown
        result = swarm(
            swarm_env, "register", "db", "--id", "d2", "--address", "a", "--port", "1", "--check", "ftp://x", ok=False
        )
        assert "--check" in result.stderr
    finally:
        backend.stop()
