"""Every strategy gets the same kinds of tests: it picks from the view, spreads as it claims, and
fails as its docstring says. Then the pool: locality failover, panic mode, exclusions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from swarm_discovery.balance import (
    STRATEGIES,
    ConsistentHash,
    Endpoint,
    LeastLoaded,
    PickRequest,
    Pool,
    RoundRobin,
    View,
    Weighted,
)


def endpoints(n: int, **fields: object) -> list[Endpoint]:
    return [Endpoint(f"e{i}", "10.0.0.1", 8000 + i, **fields) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_picks_from_the_view_and_none_from_nothing(name: str) -> None:
    strategy = STRATEGIES[name]()
    view = View(endpoints(5))
    picked = {strategy.pick(view, PickRequest(key=str(i))) for i in range(200)}  # type: ignore[union-attr]
    assert picked <= set(view.endpoints) and len(picked) >= 3
    assert strategy.pick(View([])) is None
    only = View(endpoints(1))
    assert strategy.pick(only) is only.endpoints[0]


def test_round_robin_is_even() -> None:
    view = View(endpoints(4))
    strategy = RoundRobin()
    counts = Counter(strategy.pick(view).id for _ in range(400))  # type: ignore[union-attr]
    assert set(counts.values()) == {100}


def test_weighted_follows_weights_smoothly() -> None:
    view = View(
        [Endpoint("a", "x", 1, weight=100), Endpoint("b", "x", 2, weight=200), Endpoint("c", "x", 3, weight=700)]
    )
    strategy = Weighted()
    sequence = [strategy.pick(view).id for _ in range(1000)]  # type: ignore[union-attr]
    counts = Counter(sequence)
    assert counts == {"a": 100, "b": 200, "c": 700}
    longest = max(len(run) for run in "".join(sequence).replace("a", " ").replace("b", " ").split())
    assert longest <= 4  # c is interleaved with the others, not sent in one burst


def test_least_loaded_avoids_busy_endpoints() -> None:
    view = View(endpoints(3))
    busy = view.endpoints[0]
    for _ in range(10):
        view.load.started(busy)
    strategy = LeastLoaded(random.Random(7).randrange)
    counts = Counter(strategy.pick(view).id for _ in range(300))  # type: ignore[union-attr]
    assert counts["e0"] == 0 and counts["e1"] > 100 and counts["e2"] > 100


def test_least_loaded_reads_reported_queue_depth_against_capacity() -> None:
    deep = Endpoint("deep", "x", 1, queue_depth=30, max_concurrency=32)
    roomy = Endpoint("roomy", "x", 2, queue_depth=30, max_concurrency=256)
    strategy = LeastLoaded(random.Random(1).randrange)
    view = View([deep, roomy])
    assert {strategy.pick(view).id for _ in range(50)} == {"roomy"}  # type: ignore[union-attr]


def test_consistent_hash_keeps_keys_in_place() -> None:
    pool = endpoints(10)
    strategy = ConsistentHash()
    view = View(pool)
    before = {k: strategy.pick(view, PickRequest(key=f"user-{k}")).id for k in range(1000)}  # type: ignore[union-attr]
    again = {
        k: ConsistentHash().pick(View(pool), PickRequest(key=f"user-{k}")).id  # type: ignore[union-attr]
        for k in range(1000)
    }
    assert before == again
    smaller = View([e for e in pool if e.id != "e3"])  # an unrelated instance leaves
    after = {k: strategy.pick(smaller, PickRequest(key=f"user-{k}")).id for k in range(1000)}  # type: ignore[union-attr]
    moved = [k for k in before if before[k] != after[k]]
    assert all(before[k] == "e3" for k in moved)  # only the keys of the one that left moved
    assert len(set(before.values())) == 10


def test_consistent_hash_bounds_the_load_of_a_hot_key() -> None:
    view = View(endpoints(8))
    strategy = ConsistentHash()
    for _ in range(400):  # one hot key, 400 requests in flight
        view.load.started(strategy.pick(view, PickRequest(key="hot-prompt")))  # type: ignore[arg-type]
    mean = 400 / 8
    assert max(view.load.outstanding.values()) <= 1.25 * mean + 1


def test_pool_prefers_zone_then_region_then_anywhere() -> None:
    a = Endpoint("a", "x", 1, zone="eu-1a", region="eu")
    b = Endpoint("b", "x", 2, zone="eu-1b", region="eu")
    c = Endpoint("c", "x", 3, zone="us-1a", region="us")
    pool = Pool(RoundRobin, zone="eu-1a", region="eu")
    healthy = {"a", "b", "c"}
    pool.update([a, b, c], lambda e: e.id in healthy)
    assert {pool.pick().id for _ in range(10)} == {"a"}  # type: ignore[union-attr]
    healthy.discard("a")
    pool.update([a, b, c], lambda e: e.id in healthy)
    assert {pool.pick().id for _ in range(10)} == {"b"}  # type: ignore[union-attr]
    assert pool.pick(exclude=["b"]).id == "c"  # type: ignore[union-attr]


def test_pool_near_a_point() -> None:
    london = Endpoint("london", "x", 1, lat=51.5, lon=-0.12)
    paris = Endpoint("paris", "x", 2, lat=48.85, lon=2.35)
    tokyo = Endpoint("tokyo", "x", 3, lat=35.7, lon=139.7)
    pool = Pool(RoundRobin, near=(51.4, -0.1))
    pool.update([tokyo, paris, london], lambda e: True)
    assert {pool.pick().id for _ in range(10)} == {"london"}  # type: ignore[union-attr]
    pool.update([tokyo, paris], lambda e: True)
    assert {pool.pick().id for _ in range(10)} == {"paris"}  # type: ignore[union-attr]


def test_panic_mode_spreads_over_everyone() -> None:
    everyone = endpoints(10)
    pool = Pool(RoundRobin)
    pool.update(everyone, lambda e: e.id in {"e0", "e1", "e2", "e3"})  # 4 of 10 healthy: under half
    assert pool.panic and pool.size == 10
    assert len({pool.pick().id for _ in range(20)}) == 10  # type: ignore[union-attr]
    pool.update(everyone, lambda e: e.id not in {"e0"})
    assert not pool.panic and pool.size == 9
