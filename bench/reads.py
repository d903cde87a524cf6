"""Catalog reads: a selector query on a 10,000-instance service (20 match) vs nginx serving the same bytes.

python -m bench.reads [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import statistics
from typing import Any
from urllib.parse import quote

import httpx

from bench.common import Nginx, Wrk, alternate, load, round_arguments, start_server

SELECTOR = 'instance.capabilities.gpu.memory_gb >= 80 && instance.location.region == "eu-west"'


def instance(i: int) -> tuple[str, str, dict[str, Any]]:
    big = i % 500 == 0  # 20 of 10,000
    return (
        "llm",
        f"llm-{i}",
        {
            "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "port": 8000,
            "version": "1.4.2",
            "tags": ["vllm"],
            "location": {"region": "eu-west" if big else "us-east", "zone": "z1"},
            "capabilities": {"gpu": {"model": "H100" if big else "A10", "memory_gb": 80 if big else 24, "count": 8}},
            "metrics": {"queue_depth": i % 7},
        },
    )


def against_nginx(path: str, count: int, fleet: str, target: str = "") -> None:
    """Load `count` instances, then read `path` from our server and the same bytes from nginx, round by round."""
    args = round_arguments(__doc__)
    server = start_server()
    try:
        print(f"loading {count:,} instances ...", flush=True)
        load(server, count, instance)
        answer = httpx.get(server.url + path).content
        nginx = Nginx(answer)
        try:
            wrk = Wrk(seconds=args.seconds)
            results = alternate(
                args.rounds, {"swarm": lambda: wrk.run(server.url + path), "nginx": lambda: wrk.run(nginx.url)}
            )
        finally:
            nginx.stop()
        print(
            f"answer: {len(answer)} bytes, {fleet}; wrk -t1 -c64 -d{args.seconds}s, "
            f"{args.rounds} rounds of swarm then nginx; server and nginx on core 0, wrk on core 1"
        )
        print(f"{'round':8} {'':6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        ratios = []
        for n, (ours, reference) in enumerate(zip(results["swarm"], results["nginx"], strict=True), 1):
            for label, r in (("swarm", ours), ("nginx", reference)):
                print(f"{n:<8} {label:6} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non2xx']:>8.0f}")
            ratios.append(ours["rps"] / reference["rps"])
        print(
            f"ratio swarm/nginx by round: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"median {statistics.median(ratios):.2f}{target}"
        )
    finally:
        server.stop()


def main() -> None:
    against_nginx(f"/v1/services/llm?selector={quote(SELECTOR)}", 10_000, "20 instances of 10,000", " (target >= 0.5)")


if __name__ == "__main__":
    main()
