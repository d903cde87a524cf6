"""What the balance core costs as a pool grows, in-process: no reference (nothing else runs this code).

1. A metrics-only view update of a balancer over 10,000 endpoints: `BalancerCore.update` with the
   same instances carrying new metrics, then one pick (target: under 5 ms, every strategy); and,
   for comparison, an update in which one instance left.
2. The server's outlier detection in a brown-out: one `POST /v1/reports` of 1,000 failures on a
   service of 10,000 instances from one of 8 reporters, each holding full windows on as many
   instances as it keeps evidence for, failing about two thirds of requests (target: under 10 ms).

python -m bench.balance_core [--endpoints 10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import statistics
import time
from collections.abc import Callable

from swarm_discovery.balance import STRATEGIES, BalancerCore, PickRequest
from swarm_discovery.balance.outliers import WINDOW
from swarm_discovery.balance.quorum import MAX_EVIDENCE, QuorumDetector, Reporters
from swarm_discovery.records import InstanceView, Location

REPORTERS = 8
ZONES = [("eu-west", "eu-west-1a"), ("eu-west", "eu-west-1b"), ("us-east", "us-east-1a")]


def instances(count: int, rng: random.Random) -> list[InstanceView]:
    return [
        InstanceView(
            service="llm",
            id=f"e{i}",
            address="10.0.0.1",
            port=8000,
            weight=rng.choice((50, 100, 200)),
            location=Location(region=ZONES[i % 3][0], zone=ZONES[i % 3][1]),
            capacity={"max_concurrency": 64},
            metrics={"queue_depth": float(rng.randrange(8))},
            status="passing",
            index=i + 1,
            registered_at=0.0,
            updated_at=0.0,
        )
        for i in range(count)
    ]


def with_new_metrics(found: list[InstanceView], rng: random.Random) -> list[InstanceView]:
    """What the next blocking query decodes after heartbeats: new objects, new metrics, same records."""
    return [i.__class__(**{**_fields(i), "metrics": {"queue_depth": float(rng.randrange(8))}}) for i in found]


def _fields(instance: InstanceView) -> dict[str, object]:
    return {name: getattr(instance, name) for name in instance.__struct_fields__}


def timed_ms(run: Callable[[], object], rounds: int) -> list[float]:
    times = []
    gc.collect()
    gc.disable()  # the collector's pauses belong to the program, not to the step measured
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    gc.enable()
    return times


def one_balancer(
    core: BalancerCore, found: list[InstanceView], updates: list[list[InstanceView]]
) -> tuple[list[float], float]:
    """Times of each metrics-only update (then a pick), and of one in which an instance left."""
    request = PickRequest(key="session-1")
    core.update(found)
    core.pool.pick(request)  # per-set structures (the hash ring) are built on the first pick
    batches = iter(updates)

    def metrics_only() -> None:
        core.update(next(batches))
        assert core.pool.pick(request) is not None

    def one_left() -> None:
        core.update(found[1:])
        assert core.pool.pick(request) is not None

    return timed_ms(metrics_only, len(updates)), timed_ms(one_left, 1)[0]


def view_updates(count: int, rounds: int) -> None:
    rng = random.Random(1)
    found = instances(count, rng)
    updates = [with_new_metrics(found, rng) for _ in range(rounds)]
    print(f"view update of a balancer over {count} endpoints, then one pick; ms")
    print(f"{'strategy':30} {'metrics p50':>12} {'max':>7} {'one left':>9}")
    for locality in ({}, {"zone": "eu-west-1a", "region": "eu-west"}):
        for name in STRATEGIES:
            times, one_left = one_balancer(BalancerCore("llm", strategy=name, **locality), found, updates)
            label = name + (" + zone tiers" if locality else "")
            print(f"{label:30} {statistics.median(times):>12.2f} {max(times):>7.2f} {one_left:>9.1f}")
    print("target: a metrics-only update under 5 ms")


def reported(detection: tuple[Reporters, QuorumDetector, int], reporter: str, batch: list[tuple[str, bool]]) -> None:
    """What `Registry.report` does with one reporter's batch, less the lookups."""
    reporters, detector, pool_size = detection
    judge = reporters.judge(reporter)
    for key, ok in batch:
        reason = judge.observe("llm", key, ok)
        if reason is not None:
            detector.vote(key, reporter, reason, False, pool_size)


def brown_out(count: int, rounds: int) -> None:
    rng = random.Random(2)
    keys = [f"e{i}" for i in range(count)]
    times = []
    for _ in range(rounds):
        detection = (Reporters(), QuorumDetector(), count)
        for n in range(REPORTERS):  # each with full windows on as many instances as it keeps, two thirds failing
            seen = rng.sample(keys, MAX_EVIDENCE)
            reported(detection, f"r{n}", [(key, rng.random() < 1 / 3) for key in seen for _ in range(WINDOW)])
        batch = [(rng.choice(keys), False) for _ in range(1000)]
        times += timed_ms(functools.partial(reported, detection, "r0", batch), 1)
    p50 = statistics.median(times)
    print(f"\n1,000 failure reports from one of {REPORTERS} reporters on a service of {count} instances")
    print(f"in a brown-out: {p50:.2f} ms (p50 of {rounds}; max {max(times):.2f} ms); target: under 10 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    view_updates(args.endpoints, args.rounds)
    brown_out(args.endpoints, max(args.rounds // 4, 1))


if __name__ == "__main__":
    main()
