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


def test_mistyped_names_capabilities_and_numbers_fail_in_one_line(
    server: Server, swarm_env: dict[str, str], tmp_path: Path
) -> None:
    reg = ("register", "llm", "--address", "10.0.0.1", "--port", "8000")
    swarm(swarm_env, *reg, "--id", "w5")
    for args, message in (
        (("deregister", "llm", "nothere/../w5"), "error: 400: id: 'nothere/../w5' must match"),
        (("instances", "a\nb"), "error: 400: service: 'a\\nb' must match"),
        (("heartbeat", "llm", "x\r"), "error: 400: id: 'x\\r' must match"),
        ((*reg, "--id", "c", "--capability", "a=1", "--capability", "a.b=2"), "a is given as a value and as a group"),
        ((*reg, "--id", "c", "--capability", "a.b=1", "--capability", "a=2"), "a is given as a value and as a group"),
        ((*reg, "--id", "c", "--capability", "a=1", "--capability", "a=2"), "--capability a=2: a is given twice"),
        ((*reg, "--id", "c", "--capability", "a..b=1"), "error: --capability a..b=1: a name between dots is empty"),
        (("heartbeat", "llm", "w5", "--metric", "x=nan"), "error: --metric: expected a finite number, got 'nan'"),
        (("heartbeat", "llm", "w5", "--metric", "x=1e400"), "error: --metric: expected a finite number"),
        ((*reg, "--id", "c", "--capability", "gpu.memory_gb=1e400"), "--capability gpu.memory_gb: expected a finite"),
    ):
        result = swarm(swarm_env, *args, ok=False)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = json.loads(swarm(swarm_env, "instances", "llm", "--json").stdout)
    assert [i["id"] for i in listed] == ["w5"]  # nothing else was removed or written
    assert listed[0]["node"] is None and listed[0]["maintenance"] is None  # unset, and there
    numbers = ("--capacity", "max_concurrency=16", "--metric", "queue_depth=3", "--capability", "x=NaN")
    spec = tmp_path / "nulls.json"
    spec.write_text(json.dumps({"capacity": None, "metrics": None, "checks": None}))
    made = json.loads(swarm(swarm_env, *reg, "--id", "c", "-f", str(spec), *numbers, "--json").stdout)
    assert (made["capacity"], made["metrics"]) == ({"max_concurrency": 16}, {"queue_depth": 3})
    assert made["capabilities"] == {"x": "NaN"}  # not JSON's number: a string, as any other text


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


def test_tables_fit_80_columns_and_never_cut_id_address_or_status(server: Server, swarm_env: dict[str, str]) -> None:
    narrow = {**swarm_env, "COLUMNS": "80"}
    swarm(
        narrow,
        "register",
        "llm-inference",
        "--id",
        "llm-inference-eu-west-1",
        "--address",
        "10.8.100.107",
        "--port",
        "65000",
        "--capability",
        "gpu.model=H100",
        "--capability",
        "gpu.memory_gb=80",
        "--capability",
        'models=["llama-3-70b","mistral-large"]',
        "--region",
        "eu-west",
        "--zone",
        "eu-west-1a",
        "--ttl",
        "1m",
    )
    server.http.put(
        "/v1/services/llm-inference/instances/llm-inference-eu-west-1/heartbeat",
        json={"status": "critical", "output": "CUDA error: an illegal memory access was encountered on device 3"},
    )
    table = swarm(narrow, "instances", "llm-inference", "--all").stdout
    lines = table.splitlines()
    assert all(len(line) <= 80 for line in lines), table
    assert "llm-inference-eu-west-1" in table and "10.8.100.107:65000" in table and "critical" in table
    assert "CUDA error" in table  # the reason, wrapped to fit
    header = lines[0].split()
    assert "version" not in header and "tags" not in header  # nothing to show there
    assert "not shown at this width" in table  # the capabilities did not fit
    assert "capabilities" in swarm(swarm_env, "instances", "llm-inference", "--all").stdout.splitlines()[0]


def test_help_shows_flags_as_flags_and_values_by_name(swarm_env: dict[str, str]) -> None:
    for command in ("instances", "register", "serve", "checks", "watch", "heartbeat"):
        shown = swarm(swarm_env, command, "--help").stdout
        assert "<bool>" not in shown and "<list[" not in shown and "(default" not in shown, shown
    assert "HOST:PORT" in swarm(swarm_env, "serve", "--help").stdout


def test_json_on_every_command(server: Server, swarm_env: dict[str, str]) -> None:
    registered = json.loads(
        swarm(swarm_env, "register", "svc", "--id", "a", "--address", "10.0.0.1", "--port", "80", "--json").stdout
    )
    assert (registered["weight"], registered["protocol"], registered["tags"]) == (100, "http", [])
    view = json.loads(swarm(swarm_env, "maintenance", "svc", "a", "--reason", "swap", "--json").stdout)
    assert view["status"] == "maintenance" and view["maintenance"]["reason"] == "swap"
    beat = json.loads(swarm(swarm_env, "heartbeat", "svc", "a", "--metric", "queue_depth=3", "--json").stdout)
    assert beat["metrics"] == {"queue_depth": 3}
    info = json.loads(swarm(swarm_env, "info", "--json").stdout)
    assert info["store"] == "sqlite" and info["instances"] == 1 and info["watchers"] == 0
    assert "sqlite" in swarm(swarm_env, "info").stdout
    gone = json.loads(swarm(swarm_env, "deregister", "svc", "a", "--json").stdout)
    assert gone == {"service": "svc", "id": "a", "deregistered": True}


def test_an_unknown_service_and_a_server_that_is_not_swarm(server: Server, swarm_env: dict[str, str]) -> None:
    from tests.backends import HtmlServer

    result = swarm(swarm_env, "instances", "nosuch", ok=False)
    assert result.returncode == 1 and "no service 'nosuch'" in result.stderr and not result.stdout
    web = HtmlServer()
    try:
        result = swarm({**swarm_env, "SWARM_ADDR": web.addr}, "services", ok=False)
    finally:
        web.stop()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "html" not in result.stdout.lower(), result.stderr
    assert f"http://{web.addr} does not look like a swarm server (it answered 404 text/html" in lines[0]


def test_nodes_register_remove_and_make_their_instances_critical(server: Server, swarm_env: dict[str, str]) -> None:
    node = json.loads(
        swarm(
            swarm_env,
            "node",
            "register",
            "gpu-9",
            "--address",
            "127.0.0.1",
            "--gpu",
            "H100:80:8",
            "--gpu",
            "A10:24",
            "--cpus",
            "64",
            "--label",
            "rack=r1",
            "--region",
            "eu-west",
            "--json",
        ).stdout
    )
    assert node["kind"] == "compute" and node["labels"] == {"rack": "r1"} and node["status"] == "passing"
    assert [(g["model"], g["count"]) for g in node["resources"]["gpus"]] == [("H100", 8), ("A10", 1)]
    swarm(swarm_env, "register", "llm", "--id", "a", "--address", "10.0.0.1", "--port", "80", "--node", "gpu-9")
    # Now the node fails a check of its own: the instance, whose own checks pass, goes critical with it.
    swarm(swarm_env, "node", "register", "gpu-9", "--check", "tcp://127.0.0.1:1", "--check-interval", "100ms")
    deadline = time.monotonic() + 5
    while "node gpu-9 is critical" not in (table := swarm(swarm_env, "instances", "llm", "--all").stdout):
        assert time.monotonic() < deadline, table
        time.sleep(0.1)
    assert "critical" in swarm(swarm_env, "nodes").stdout
    assert "node gpu-9: tcp" in swarm(swarm_env, "checks", "llm", "a").stdout
    checks = json.loads(swarm(swarm_env, "checks", "--node", "gpu-9", "--json").stdout)
    assert [(c["type"], c["status"], c["node"]) for c in checks] == [("tcp", "critical", "gpu-9")]
    assert "--gpu" in swarm(swarm_env, "node", "register", "x", "--gpu", "H100", ok=False).stderr
    swarm(swarm_env, "node", "remove", "gpu-9")
    assert json.loads(swarm(swarm_env, "nodes", "--json").stdout) == []
    assert "404" in swarm(swarm_env, "node", "remove", "gpu-9", ok=False).stderr


def test_heartbeat_every_keeps_a_ttl_alive(server: Server, swarm_env: dict[str, str]) -> None:
    swarm(swarm_env, "register", "job", "--id", "j", "--address", "10.0.0.1", "--port", "80", "--ttl", "300ms")
    beating = subprocess.Popen(
        [sys.executable, "-m", "swarm_discovery", "heartbeat", "job", "j", "--every", "100ms", "--metric", "load=1"],
        env=swarm_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert beating.stderr is not None
        assert "heartbeating job/j every 100ms" in beating.stderr.readline()
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # three TTLs and more, each renewed in time
            view = json.loads(swarm(swarm_env, "instances", "job", "--all", "--json").stdout)[0]
            assert view["status"] == "passing" and view["metrics"] == {"load": 1}
    finally:
        beating.terminate()
        beating.wait()


def test_watch_outlives_a_server_restart(server: Server, swarm_env: dict[str, str]) -> None:
    swarm(swarm_env, "register", "llm", "--id", "a", "--address", "10.0.0.1", "--port", "80")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "swarm_discovery", "watch", "llm", "--json"],
        env=swarm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        assert json.loads(watcher.stdout.readline())["event"] == "snapshot"
        server.stop()
        assert "lost the server" in watcher.stderr.readline()
        server.start()
        swarm(swarm_env, "register", "llm", "--id", "b", "--address", "10.0.0.2", "--port", "80")
        assert "answers again" in watcher.stderr.readline()
        seen: list[str] = []
        while "b" not in seen:
            event = json.loads(watcher.stdout.readline())
            data = event["data"]
            seen += [i["id"] for i in data] if event["event"] == "snapshot" else [data["id"]]
        assert watcher.poll() is None
    finally:
        watcher.terminate()
        watcher.wait()
