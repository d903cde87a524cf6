"""The OpenAI-style paths through `swarm gateway`, in front of LLM simulators (`tests/llm_sim.py`).

Routing by the body's model across services, OpenAI's error shapes, `/v1/models`, token streams
passed on as they come, prefix affinity, a model server killed with `kill -9` under load, and
requests refused with 429 when every server is saturated.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway import GatewayProcess, Simulators
from tests.helpers import unique, wait_for
from tests.server import Server

# The gateway is the operator's own: its reports alone eject (without ACLs, a reporter is its address).
REGISTRY_ARGS = ("--expiry-window", "50ms", "--ejection-base", "30s", "--trusted-reporter", "127.0.0.1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("models") / "data", args=REGISTRY_ARGS)
    server.start()
    yield server
    server.stop()


def register(registry: Server, service: str, sims: Simulators, models: list[str], **fields: object) -> list[str]:
    ids = []
    for port in sims.ports:
        iid = f"sim-{port}"
        body = {"address": "127.0.0.1", "port": port, "capabilities": {"models": models}, **fields}
        registry.http.put(f"/v1/services/{service}/instances/{iid}", json=body).raise_for_status()
        ids.append(iid)
    return ids


@pytest.fixture(scope="module")
def fleet(registry: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """llama on two simulators of service llm-a, qwen on one of llm-b, a gateway scraping their metrics."""
    llama, qwen = Simulators(2, ("--model", "llama")), Simulators(1, ("--model", "qwen", "--step-ms", "10"))
    ids = {
        "llama": register(registry, "llm-a", llama, ["llama"], capacity={"max_concurrency": 8}),
        "qwen": register(registry, "llm-b", qwen, ["qwen", "qwen-alias"]),
    }
    gateway = GatewayProcess(registry.addr, tmp_path_factory.mktemp("models-logs"), ("--scrape", "/metrics"))
    wait_for(lambda: set(gateway.status()["models"]) == {"llama", "qwen", "qwen-alias"})
    yield {"gateway": gateway, "ids": ids, "llama": llama, "qwen": qwen}
    gateway.stop()
    llama.stop()
    qwen.stop()


def chat(model: str, text: str = "Hello there", **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def test_requests_go_by_model_across_services(fleet: dict[str, object]) -> None:
    gateway: GatewayProcess = fleet["gateway"]  # type: ignore[assignment]
    ids: dict[str, list[str]] = fleet["ids"]  # type: ignore[assignment]
    for model, path, body in (
        ("llama", "/v1/chat/completions", chat("llama")),
        ("qwen", "/v1/chat/completions", chat("qwen")),
        ("llama", "/v1/completions", {"model": "llama", "prompt": "Once upon a time"}),
        ("qwen", "/v1/embeddings", {"model": "qwen", "input": "embed me"}),
    ):
        answer = gateway.http.post(path, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-swarm-instance"] in ids[model]
        assert answer.json()["object"] in ("chat.completion", "list")
    alias = gateway.http.post("/v1/chat/completions", json=chat("qwen-alias"))
    assert alias.status_code == 404 and alias.headers["x-swarm-instance"] == ids["qwen"][0]  # the server's own 404
    listed = gateway.http.get("/v1/models").json()
    assert listed["object"] == "list"
    assert {(m["id"], m["instances"]) for m in listed["data"]} == {("llama", 2), ("qwen", 1), ("qwen-alias", 1)}


def test_an_unknown_model_is_a_404_in_openais_shape(fleet: dict[str, object]) -> None:
    gateway: GatewayProcess = fleet["gateway"]  # type: ignore[assignment]
    answer = gateway.http.post("/v1/chat/completions", json=chat("gpt-17"))
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {
            "message": "The model `gpt-17` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    missing = gateway.http.post("/v1/completions", content=b'{"prompt": "x"}')
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    assert gateway.http.get("/v1/chat/completions").status_code == 405


def test_a_known_model_with_no_healthy_instance_is_a_503(registry: Server, fleet: dict[str, object]) -> None:
    gateway: GatewayProcess = fleet["gateway"]  # type: ignore[assignment]
    service = unique("resting")
    registry.http.put(
        f"/v1/services/{service}/instances/r0",
        json={"address": "127.0.0.1", "port": 9, "capabilities": {"models": ["resting-model"]}},
    ).raise_for_status()
    registry.http.put(f"/v1/services/{service}/instances/r0/maintenance", json={"enable": True, "reason": "upgrade"})
    wait_for(lambda: gateway.http.post("/v1/chat/completions", json=chat("resting-model")).status_code == 503)
    answer = gateway.http.post("/v1/chat/completions", json=chat("resting-model"))
    assert answer.json()["error"]["message"] == "no healthy instance serves the model `resting-model`"
    assert answer.headers["retry-after"] == "1"
    assert "resting-model" not in {m["id"] for m in gateway.http.get("/v1/models").json()["data"]}


def test_a_token_stream_passes_through_as_it_is_made(fleet: dict[str, object]) -> None:
    gateway: GatewayProcess = fleet["gateway"]  # type: ignore[assignment]
    arrivals = []
    with gateway.http.stream("POST", "/v1/chat/completions", json=chat("qwen", stream=True, max_tokens=40)) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/event-stream"
        for line in answer.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))
    assert arrivals[-1][1] == "data: [DONE]" and len(arrivals) == 41
    # 40 engine steps of 10 ms: the first token is out long before the last
    assert arrivals[-1][0] - arrivals[0][0] > 0.2


def test_a_shared_prompt_prefix_returns_to_the_server_that_has_it_cached(fleet: dict[str, object]) -> None:
    gateway: GatewayProcess = fleet["gateway"]  # type: ignore[assignment]
    systems = [f"system prompt {n}: " + " ".join(f"rule{n}-{i}" for i in range(200)) for n in range(2)]
    where: dict[int, Counter[str]] = {0: Counter(), 1: Counter()}
    for turn in range(6):
        for n, system in enumerate(systems):
            body = {
                "model": "llama",
                "max_tokens": 2,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"question {turn}"}],
            }
            answer = gateway.http.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200
            where[n][answer.headers["x-swarm-instance"]] += 1
    for counts in where.values():
        assert counts.most_common(1)[0][1] >= 5  # one server has this prompt's prefix; it gets the prompt


def test_a_model_server_killed_under_load_fails_only_requests_already_streaming(
    registry: Server, tmp_path: Path
) -> None:
    doomed, spare = Simulators(1, ("--model", "kill-me", "--max-seqs", "4")), Simulators(1, ("--model", "kill-me"))
    service = unique("llm-kill")
    register(registry, service, doomed, ["kill-me"])
    register(registry, service, spare, ["kill-me"])
    gateway = GatewayProcess(registry.addr, tmp_path, ("--model-strategy", "round_robin"))
    wait_for(lambda: "kill-me" in gateway.status()["models"])
    results: list[tuple[str, bool]] = []  # how it ended, whether any of its body had arrived
    lock = threading.Lock()
    counter = iter(range(60))

    def client() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            for n in counter:
                if n == 20:
                    doomed.kill()
                received = False
                try:
                    with http.stream("POST", "/v1/chat/completions", json=chat("kill-me", stream=True)) as answer:
                        for line in answer.iter_lines():
                            received = received or line.startswith("data: ")
                        ended = "ok" if answer.status_code == 200 and received else f"status {answer.status_code}"
                except httpx.HTTPError as exc:
                    ended = type(exc).__name__
                with lock:
                    results.append((ended, received))

    try:
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gateway.stop()
        spare.stop()
    assert len(results) == 60
    failed_before_streaming = [ended for ended, received in results if ended != "ok" and not received]
    assert failed_before_streaming == []
    assert sum(ended == "ok" for ended, _ in results) >= 60 - 8  # at most those streaming from it when it died


def test_when_every_server_is_saturated_requests_wait_then_get_429(registry: Server, tmp_path: Path) -> None:
    sims = Simulators(1, ("--model", "busy", "--max-seqs", "1", "--step-ms", "20"))
    service = unique("llm-busy")
    register(registry, service, sims, ["busy"], capacity={"max_concurrency": 1})
    routes = tmp_path / "routes.toml"
    routes.write_text(f'[models]\nservices = ["{service}"]\nqueue_timeout = "300ms"\n[models.ai]\nmax_waiting = 1\n')
    gateway = GatewayProcess(registry.addr, tmp_path, ("--routes", str(routes)))
    try:
        wait_for(lambda: "busy" in gateway.status()["models"])
        answers: list[httpx.Response] = []

        def one() -> None:
            answers.append(gateway.http.post("/v1/chat/completions", json=chat("busy", max_tokens=30)))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = Counter(a.status_code for a in answers)
        assert codes[200] >= 2 and codes[429] >= 1, codes  # one running, one waiting there, the rest refused
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "saturated"
    finally:
        gateway.stop()
        sims.stop()
