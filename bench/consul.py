"""Consul-API reads: `/v1/health/service/llm?passing` on 100 instances vs nginx serving the same bytes.

The same fleet, load and pinning as bench.reads; the answer is Consul's shape (node, service and
checks per instance), cached like every read.

python -m bench.consul [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import statistics

import httpx

from bench.common import Nginx, Wrk, alternate, load, round_arguments, start_server
from bench.reads import instance

PATH = "/v1/health/service/llm?passing"


def main() -> None:
    args = round_arguments(__doc__)
    server = start_server()
    try:
        load(server, 100, instance)
        answer = httpx.get(server.url + PATH).content
        assert len(httpx.get(server.url + PATH).json()) == 100
        nginx = Nginx(answer)
        try:
            wrk = Wrk(seconds=args.seconds)
            results = alternate(
                args.rounds, {"swarm": lambda: wrk.run(server.url + PATH), "nginx": lambda: wrk.run(nginx.url)}
            )
        finally:
            nginx.stop()
        print(f"answer: {len(answer)} bytes, 100 instances; wrk -t1 -c64 -d{args.seconds}s, {args.rounds} rounds")
        print(f"{'round':8} {'':6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        ratios = []
        for n, (ours, reference) in enumerate(zip(results["swarm"], results["nginx"], strict=True), 1):
            for label, r in (("swarm", ours), ("nginx", reference)):
                print(f"{n:<8} {label:6} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non2xx']:>8.0f}")
            ratios.append(ours["rps"] / reference["rps"])
        print(f"ratio swarm/nginx: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
