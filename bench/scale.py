"""Scale: 100,000 instances in one server. Resident memory, restart time after kill -9, and
selector queries over a 10,000-instance service that no cache can answer.

    python -m bench.scale [--instances 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import msgspec

from bench.common import load, rss_mb, start_server
from swarm_discovery.selector import Bindings, compile_selector

SERVICES = 10
SMALL = "instance.capabilities.gpu.memory_gb >= 80 && instance.port < 8100"
LARGE = 'instance.capabilities.gpu.memory_gb >= 80 && "vllm" in instance.tags'


def instance(i: int) -> tuple[str, str, dict[str, Any]]:
    service = "llm" if i % SERVICES == 0 else f"svc-{i % SERVICES}"
    return (
        service,
        f"i-{i}",
        {
            "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "port": 8000 + i % 1000,
            "version": "1.4.2",
            "tags": ["vllm", f"shard-{i % 16}"],
            "meta": {"owner": f"team-{i % 7}"},
            "location": {"region": ("eu-west", "us-east", "ap-south")[i % 3], "zone": f"z{i % 5}"},
            "capabilities": {
                "gpu": {"model": ("H100", "A100", "L4")[i % 3], "memory_gb": (80, 40, 24)[i % 3], "count": 8},
                "models": ["llama-3-70b"],
            },
            "capacity": {"max_concurrency": 64},
            "metrics": {"queue_depth": i % 9, "gpu_util": 0.5},
            "checks": [{"type": "ttl", "ttl": "1h"}],
        },
    )


def timed_get(http: httpx.Client, path: str, **params: Any) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = http.get(path, params=params)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, response


def fresh_queries(http: httpx.Client, selector: str, runs: int = 20) -> tuple[list[float], int]:
    """Each run asks a selector never seen before: compiled, evaluated on all 10,000, encoded; no cache helps."""
    times, answer = [], 0
    for n in range(runs):
        took, response = timed_get(http, "/v1/services/llm", selector=f"{selector} && instance.port != {n}")
        times.append(took)
        answer = len(response.json())
    return times, answer


def after_a_change(http: httpx.Client, selector: str, runs: int = 20) -> list[float]:
    """A known selector asked again after one instance changed: only that instance is evaluated anew."""
    timed_get(http, "/v1/services/llm", selector=selector)
    times = []
    for n in range(runs):
        http.put(f"/v1/services/llm/instances/i-{n * 10}/heartbeat", json={"metrics": {"queue_depth": n}})
        times.append(timed_get(http, "/v1/services/llm", selector=selector)[0])
    return times


def evaluation_costs() -> str:
    """The selectors above on 10,000 records in this process: generated Python vs cel-expr-python."""
    records = [Bindings(msgspec.to_builtins(instance(i)[2]), {}) for i in range(0, 100_000, SERVICES)]
    warm = compile_selector("instance.port > 0 && instance.capabilities.gpu.memory_gb > 0")
    for record in records:  # CEL converts a record on its first evaluation; the server keeps that per version
        warm.matches_in_cel(record)
    figures = []
    for source in (SMALL, LARGE):
        selector = compile_selector(source)
        took = []
        for evaluate in (selector.matches, selector.matches_in_cel):
            started = time.perf_counter()
            matched = [evaluate(r) for r in records]
            took.append((time.perf_counter() - started) * 1e6 / len(records))
            assert sum(matched) > 0
        figures.append(f"{took[0]:.2f} vs {took[1]:.2f} us")
    return (
        f"evaluating one record, generated Python vs cel-expr-python (in this process, same records): "
        f"small {figures[0]}, large {figures[1]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    args = parser.parse_args()
    server = start_server()
    try:
        started = time.perf_counter()
        load(server, args.instances, instance)
        loaded = time.perf_counter() - started
        memory = rss_mb(server.worker_pid())

        server.kill()
        started = time.perf_counter()
        server.start()
        restart = time.perf_counter() - started
        count = httpx.get(f"{server.url}/v1/server").json()["instances"]

        http = httpx.Client(base_url=server.url, timeout=60)
        first = [
            timed_get(http, "/v1/services/llm", selector=f"instance.capabilities.gpu.memory_gb >= {70 + n}")[0]
            for n in range(1, 4)
        ]
        small, small_answer = fresh_queries(http, SMALL)
        large, large_answer = fresh_queries(http, LARGE)
        print(
            f"{args.instances} instances in {SERVICES} services, loaded in {loaded:.1f} s "
            f"({args.instances / loaded:.0f}/s from one Python client)"
        )
        print(f"resident memory of the server: {memory:.0f} MB ({memory * 1024 / args.instances:.1f} KB per instance)")
        print(f"restart after kill -9 until serving all {count}: {restart:.2f} s")
        changed = after_a_change(http, SMALL)
        for label, times, answer in (("small", small, small_answer), ("large", large, large_answer)):
            print(
                f"uncached selector query over the 10,000-instance service, {label} answer ({answer} match): "
                f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms (target under 50 ms)"
            )
        print(
            f"the same selector again after a heartbeat changed one instance (the cached answer is stale): "
            f"median {statistics.median(changed):.1f} ms, max {max(changed):.1f} ms"
        )
        print(
            f"first queries after the restart (each record's selector bindings built on first use): "
            f"{', '.join(f'{t:.0f}' for t in first)} ms"
        )
        print(evaluation_costs())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
