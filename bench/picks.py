"""Pick latency per strategy over 10,000 endpoints, through `Pool` (tiers and panic included).

python -m bench.picks [--endpoints 10000] [--picks 200000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from swarm_discovery.balance import STRATEGIES, Endpoint, PickRequest, Pool

ZONES = [("eu-west", "eu-west-1a"), ("eu-west", "eu-west-1b"), ("us-east", "us-east-1a")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--picks", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    endpoints = [
        Endpoint(
            f"e{i}",
            "10.0.0.1",
            8000,
            weight=rng.choice((50, 100, 200)),
            region=ZONES[i % 3][0],
            zone=ZONES[i % 3][1],
            queue_depth=rng.randrange(8),
            max_concurrency=64,
        )
        for i in range(args.endpoints)
    ]
    keys = [PickRequest(key=f"session-{k}") for k in range(1024)]
    print(f"{args.endpoints} endpoints, {args.picks} picks each; times per pick, in microseconds")
    print(f"{'strategy':28} {'p50':>7} {'p99':>7} {'build ms':>9}")
    for locality in (False, True):
        for name, strategy in STRATEGIES.items():
            pool = Pool(strategy, zone="eu-west-1a", region="eu-west") if locality else Pool(strategy)
            started = time.perf_counter()
            pool.update(endpoints)
            pool.pick(keys[0])  # per-view structures (the hash ring) are built on first pick
            build = (time.perf_counter() - started) * 1000
            times = []
            clock = time.perf_counter_ns
            gc.collect()
            gc.disable()  # the collector's pauses belong to the program, not to the pick
            for n in range(args.picks):
                request = keys[n & 1023]
                t0 = clock()
                endpoint = pool.pick(request)
                times.append(clock() - t0)
                assert endpoint is not None
                pool.load.started(endpoint)
                if n % 64 == 0:  # keep a few hundred requests in flight
                    for e in endpoints[rng.randrange(len(endpoints)) :: 997]:
                        if pool.load.of(e):
                            pool.load.finished(e)
            gc.enable()
            times.sort()
            label = name + (" + zone tiers" if locality else "")
            p50 = statistics.median(times) / 1000
            p99 = times[int(len(times) * 0.99)] / 1000
            print(f"{label:28} {p50:>7.2f} {p99:>7.2f} {build:>9.1f}")
    print("target: p99 under 20 us")


if __name__ == "__main__":
    main()
