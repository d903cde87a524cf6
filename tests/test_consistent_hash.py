"""The hash ring updated in place is the ring built afresh: same points, same owners, same picks."""

from __future__ import annotations

import random

from swarm_discovery.balance import ConsistentHash, Endpoint, EndpointSet, PickRequest
from swarm_discovery.balance.consistent_hash import MAX_RING


def members(ids: list[str]) -> EndpointSet:
    return EndpointSet([Endpoint(eid, "10.0.0.1", 8000) for eid in ids])


def owners(strategy: ConsistentHash, view: EndpointSet) -> list[str]:
    return [strategy.pick(view, PickRequest(key=f"user-{k}")).id for k in range(500)]  # type: ignore[union-attr]


def test_leaves_and_joins_in_place_make_the_ring_a_fresh_build_makes() -> None:
    rng = random.Random(3)
    ids = [f"e{i}" for i in range(300)]
    kept = ConsistentHash()
    owners(kept, members(ids))
    for round_ in range(20):
        for _ in range(rng.randrange(1, 6)):  # a few leave, a few join, in any order
            ids.remove(rng.choice(ids))
        ids += [f"n{round_}-{j}" for j in range(rng.randrange(0, 6))]
        rng.shuffle(ids)
        view = members(ids)
        before = kept._per
        found = owners(kept, view)
        fresh = ConsistentHash()
        fresh._per = before  # what a build for this membership would use, had the pool been this size all along
        fresh._build(view)
        assert kept._per == before and kept._points == fresh._points and kept._owners == fresh._owners
        assert found == owners(fresh, view)


def test_only_the_keys_of_those_that_left_move() -> None:
    ids = [f"e{i}" for i in range(100)]
    strategy = ConsistentHash()
    before = owners(strategy, members(ids))
    after = owners(strategy, members([eid for eid in ids if eid not in {"e3", "e50"}] + ["new"]))
    assert all(old in {"e3", "e50"} or new == "new" for old, new in zip(before, after, strict=True) if old != new)


def test_points_per_endpoint_change_only_past_the_ring_or_at_half_the_pool() -> None:
    strategy = ConsistentHash()
    count = MAX_RING // 32  # 32 points each
    ids = [f"e{i}" for i in range(count)]
    owners(strategy, members(ids))
    assert strategy._per == 32
    owners(strategy, members(ids[: count * 3 // 4]))  # could have more points each, keeps its 32
    assert strategy._per == 32
    owners(strategy, members(ids[: count // 2]))  # half: 64 each, from a fresh ring
    assert strategy._per == 64 and len(strategy._points) == 64 * (count // 2)
