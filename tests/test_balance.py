"""Every strategy gets the same kinds of tests: it picks from the view, spreads as it claims, and
fails as its docstring says. Then the pool: locality failover, panic mode, exclusions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from swarm_discovery.balance import (
    STRATEGIES,
    BalancerCore,
    ConsistentHash,
    Endpoint,
    EndpointSet,
    LeastLoaded,
    Outcome,
    PickRequest,
    Pool,
    RoundRobin,
    Weighted,
)
from swarm_discovery.balance.outliers import MIN_REQUESTS, WINDOW, OutlierDetector, OutlierSettings
from swarm_discovery.records import InstanceView, Location


def endpoints(n: int, **fields: object) -> list[Endpoint]:
    return [Endpoint(f"e{i}", "10.0.0.1", 8000 + i, **fields) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_picks_from_the_view_and_none_from_nothing(name: str) -> None:
    strategy = STRATEGIES[name]()
    view = EndpointSet(endpoints(5))
    picked = {strategy.pick(view, PickRequest(key=str(i))) for i in range(200)}  # type: ignore[union-attr]
    assert picked <= set(view.endpoints) and len(picked) >= 3
    assert strategy.pick(EndpointSet([])) is None
    only = EndpointSet(endpoints(1))
    assert strategy.pick(only) is only.endpoints[0]


def test_round_robin_is_even() -> None:
    view = EndpointSet(endpoints(4))
    strategy = RoundRobin()
    counts = Counter(strategy.pick(view).id for _ in range(400))  # type: ignore[union-attr]
    assert set(counts.values()) == {100}


def test_weighted_follows_weights_smoothly() -> None:
    view = EndpointSet(
        [Endpoint("a", "x", 1, weight=100), Endpoint("b", "x", 2, weight=200), Endpoint("c", "x", 3, weight=700)]
    )
    strategy = Weighted()
    sequence = [strategy.pick(view).id for _ in range(1000)]  # type: ignore[union-attr]
    counts = Counter(sequence)
    assert counts == {"a": 100, "b": 200, "c": 700}
    longest = max(len(run) for run in "".join(sequence).replace("a", " ").replace("b", " ").split())
    assert longest <= 4  # c is interleaved with the others, not sent in one burst


def test_least_loaded_avoids_busy_endpoints() -> None:
    view = EndpointSet(endpoints(3))
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
    view = EndpointSet([deep, roomy])
    assert {strategy.pick(view).id for _ in range(50)} == {"roomy"}  # type: ignore[union-attr]


def test_consistent_hash_keeps_keys_in_place() -> None:
    pool = endpoints(10)
    strategy = ConsistentHash()
    view = EndpointSet(pool)
    before = {k: strategy.pick(view, PickRequest(key=f"user-{k}")).id for k in range(1000)}  # type: ignore[union-attr]
    again = {
        k: ConsistentHash().pick(EndpointSet(pool), PickRequest(key=f"user-{k}")).id  # type: ignore[union-attr]
        for k in range(1000)
    }
    assert before == again
    smaller = EndpointSet([e for e in pool if e.id != "e3"])  # an unrelated instance leaves
    after = {k: strategy.pick(smaller, PickRequest(key=f"user-{k}")).id for k in range(1000)}  # type: ignore[union-attr]
    moved = [k for k in before if before[k] != after[k]]
    assert all(before[k] == "e3" for k in moved)  # only the keys of the one that left moved
    assert len(set(before.values())) == 10


def test_consistent_hash_bounds_the_load_of_a_hot_key() -> None:
    view = EndpointSet(endpoints(8))
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
    pool.update([a, b, c], set(healthy))
    assert {pool.pick().id for _ in range(10)} == {"a"}  # type: ignore[union-attr]
    healthy.discard("a")
    pool.update([a, b, c], set(healthy))
    assert {pool.pick().id for _ in range(10)} == {"b"}  # type: ignore[union-attr]
    assert pool.pick(exclude=["b"]).id == "c"  # type: ignore[union-attr]


def test_pool_near_a_point() -> None:
    london = Endpoint("london", "x", 1, lat=51.5, lon=-0.12)
    paris = Endpoint("paris", "x", 2, lat=48.85, lon=2.35)
    tokyo = Endpoint("tokyo", "x", 3, lat=35.7, lon=139.7)
    pool = Pool(RoundRobin, near=(51.4, -0.1))
    pool.update([tokyo, paris, london])
    assert {pool.pick().id for _ in range(10)} == {"london"}  # type: ignore[union-attr]
    pool.update([tokyo, paris])
    assert {pool.pick().id for _ in range(10)} == {"paris"}  # type: ignore[union-attr]


def test_panic_mode_spreads_over_everyone() -> None:
    everyone = endpoints(10)
    pool = Pool(RoundRobin)
    pool.update(everyone, {"e0", "e1", "e2", "e3"})  # 4 of 10 healthy: under half
    assert pool.panic and pool.size == 10
    assert len({pool.pick().id for _ in range(20)}) == 10  # type: ignore[union-attr]
    pool.update(everyone, {e.id for e in everyone} - {"e0"})
    assert not pool.panic and pool.size == 9


def test_outlier_ejections_grow_are_capped_and_return_slowly() -> None:
    from tests.fakes import FakeClock

    clock = FakeClock(0.0)
    detector = OutlierDetector(OutlierSettings(consecutive=3, base=30, cap=75, slow_start=10), clock)
    for _ in range(2):
        assert detector.observe("a", False, pool_size=4) is None
    first = detector.observe("a", False, pool_size=4)
    assert first is not None and first.until == 30 and first.count == 1 and "3 failures" in first.reason
    clock.advance(30)
    assert detector.release_due() == ["a"]
    assert detector.warmth("a") == pytest.approx(0.05)  # back, but warming up
    clock.advance(5)
    assert detector.warmth("a") == pytest.approx(0.5)
    clock.advance(5)
    assert detector.warmth("a") == 1.0
    for count, expected in ((2, 60), (3, 75)):  # 30 s x n, capped at 75 here
        for _ in range(3):
            ejection = detector.observe("a", False, pool_size=4)
        assert ejection is not None and ejection.count == count and ejection.until - clock.now == expected
        clock.advance(expected)
        detector.release_due()


def test_outliers_eject_at_most_half_but_always_one() -> None:
    detector = OutlierDetector(OutlierSettings(consecutive=1))
    assert detector.observe("a", False, pool_size=2) is not None  # one of two: always allowed
    assert detector.observe("b", False, pool_size=2) is None  # a second would be more than half
    four = OutlierDetector(OutlierSettings(consecutive=1))
    assert four.observe("a", False, pool_size=4) is not None
    assert four.observe("b", False, pool_size=4) is not None
    assert four.observe("c", False, pool_size=4) is None
    assert four.observe("d", True, pool_size=4, refused=False) is None


def test_failure_rate_far_above_the_pool_ejects() -> None:
    detector = OutlierDetector(OutlierSettings(consecutive=100))
    for n in range(40):
        for key in ("a", "b", "c"):
            detector.observe(key, True, pool_size=4)
        ejection = detector.observe("bad", n % 4 == 0, pool_size=4)  # fails 3 of 4, never 100 in a row
        if ejection is not None:
            assert "failure rate" in ejection.reason
            return
    raise AssertionError("a 75% failure rate among healthy peers was never ejected")


def test_retry_budget_allows_a_share_and_a_floor() -> None:
    from swarm_discovery.balance.budget import RetryBudget
    from tests.fakes import FakeClock

    clock = FakeClock(0.0)
    budget = RetryBudget(ratio=0.2, min_concurrent=2, window=10, clock=clock)
    for _ in range(10):
        budget.request()
    taken = [budget.try_retry() for _ in range(5)]
    assert taken == [True, True, False, False, False]  # 2 of 10 requests (20%), and the floor is 2
    budget.retry_done()
    budget.retry_done()
    assert budget.try_retry() and budget.try_retry()  # the floor: 2 at a time, whatever the share
    assert not budget.try_retry()
    clock.advance(11)  # the window moved on: no requests, no share, only the floor
    budget.retry_done()
    assert budget.try_retry()


# --- state kept across updates, exclusions -------------------------------------------------


class CountingHash(ConsistentHash):
    builds = 0

    def _build(self, view: EndpointSet) -> None:
        CountingHash.builds += 1
        super()._build(view)


def instance(i: int, *, index: int = 1, queue_depth: float = 0.0, **fields: object) -> InstanceView:
    return InstanceView(
        service="s",
        id=f"e{i}",
        address="10.0.0.1",
        port=8000 + i,
        metrics={"queue_depth": queue_depth},
        status=fields.pop("status", "passing"),  # type: ignore[arg-type]
        index=index,
        registered_at=0.0,
        updated_at=0.0,
        **fields,  # type: ignore[arg-type]
    )


def test_the_ring_is_built_once_per_membership_and_exclusions_walk_past_the_tried() -> None:
    CountingHash.builds = 0
    pool = Pool(CountingHash)
    everyone = endpoints(20)
    pool.update(everyone)
    key = PickRequest(key="user-7")
    owner = pool.pick(key)
    assert owner is not None and CountingHash.builds == 1
    pool.update(everyone, {e.id for e in everyone})  # the same membership, given again
    second = pool.pick(key, exclude=[owner.id])
    third = pool.pick(key, exclude=[owner.id, second.id])  # type: ignore[union-attr]
    assert second is not None and third is not None and len({owner.id, second.id, third.id}) == 3
    assert pool.pick(key, exclude=[owner.id]) is second  # the next one clockwise, every time
    assert CountingHash.builds == 1
    pool.update(everyone[1:])
    pool.pick(key)
    assert CountingHash.builds == 2


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_skips_the_excluded_and_gives_none_when_all_are(name: str) -> None:
    strategy = STRATEGIES[name]()
    view = EndpointSet(endpoints(6))
    for tried in ({"e0"}, {"e1", "e2"}, {"e0", "e1", "e2", "e3", "e4"}):
        request = PickRequest(key="k", exclude=frozenset(tried))
        picked = {strategy.pick(view, request).id for _ in range(100)}  # type: ignore[union-attr]
        assert picked and not picked & tried
    assert strategy.pick(view, PickRequest(exclude=frozenset(view.ids))) is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_metrics_only_update_keeps_endpoints_tiers_and_strategies(name: str) -> None:
    core = BalancerCore("s", strategy=name, zone="z1")
    core.update([instance(i, location=Location(zone=f"z{i % 2}")) for i in range(6)])
    endpoint_objects = list(core.pool._endpoints)
    tiers, strategies = list(core.pool._tiers), list(core.pool._strategies)
    core.update([instance(i, queue_depth=5.0, location=Location(zone=f"z{i % 2}")) for i in range(6)])
    assert core.pool._endpoints == endpoint_objects and core.pool._tiers == tiers
    assert core.pool._strategies == strategies
    assert {e.queue_depth for e in core.pool._endpoints} == {5.0}  # refreshed in place
    core.update([instance(i, index=2 if i == 3 else 1, weight=7) for i in range(6)])  # e3 re-registered
    changed = [e for e in core.pool._endpoints if e not in endpoint_objects]
    assert [e.id for e in changed] == ["e3"] and changed[0].weight == 7
    assert core.pool._strategies[: len(strategies)] == strategies


def test_least_loaded_reads_queue_depth_from_a_metrics_only_update() -> None:
    core = BalancerCore("s", strategy="least_loaded")
    core.update([instance(i) for i in range(3)])
    core.update([instance(i, queue_depth=1000.0 if i == 0 else 0.0) for i in range(3)])
    picked = Counter(core.pool.pick().id for _ in range(200))  # type: ignore[union-attr]
    assert picked["e0"] == 0 and picked["e1"] and picked["e2"]


# --- what leaves is forgotten; what is started is finished ---------------------------------


def test_records_of_instances_that_left_are_pruned_but_not_while_in_flight() -> None:
    core = BalancerCore("s", strategy="round_robin")
    core.update([instance(i) for i in range(4)])
    for _ in range(8):  # every endpoint answers once or twice: latency and outlier records for all
        flow = core.attempts_for("GET", None)
        next(flow)
        with pytest.raises(StopIteration):
            flow.send(Outcome(status=200, latency=0.01))
    assert set(core.pool.load.latency) == {"e0", "e1", "e2", "e3"}
    in_flight = core.attempts_for("GET", None)
    busy = next(in_flight)
    core.update([instance(i) for i in range(4) if f"e{i}" != busy.id and i != 0] + [instance(9)])
    assert busy.id in core.outliers._records and core.pool.load.outstanding == {busy.id: 1}
    with pytest.raises(StopIteration):
        in_flight.send(Outcome(status=200, latency=0.01))  # it answers after it left
    core.update([instance(i) for i in (1, 2, 3, 9) if f"e{i}" != busy.id] + [instance(10)])
    kept = {f"e{i}" for i in (1, 2, 3, 9, 10)} - {busy.id}
    assert set(core.pool.load.latency) <= kept and set(core.outliers._records) <= kept
    assert core.pool.load.outstanding == {} and core.pool.load.total == 0


def test_an_abandoned_attempt_is_released() -> None:
    core = BalancerCore("s", strategy="least_loaded", attempts=3)
    core.update([instance(i) for i in range(3)])
    flow = core.attempts_for("GET", None)
    next(flow)
    flow.send(Outcome(status=None))  # a transport error: a retry is under way
    assert core.pool.load.total == 1
    flow.close()  # the runner gave up (cancelled, or its own error)
    assert core.pool.load.outstanding == {} and core.pool.load.total == 0 and core.budget.in_flight == 0
    thrown = core.attempts_for("GET", None)
    next(thrown)
    with pytest.raises(KeyboardInterrupt):
        thrown.throw(KeyboardInterrupt())
    assert core.pool.load.outstanding == {} and core.pool.load.total == 0


# --- outlier detection keeps its rules with running totals ---------------------------------


class NaiveDetector:
    """The docstring's rules, recomputed from scratch for every observation: the oracle."""

    def __init__(self, settings: OutlierSettings) -> None:
        self.s = settings
        self.recent: dict[str, list[bool]] = {}
        self.in_row: dict[str, int] = {}
        self.ejected: set[str] = set()

    def observe(self, key: str, ok: bool, pool_size: int) -> bool:
        recent = self.recent.setdefault(key, [])
        recent.append(ok)
        del recent[:-WINDOW]
        self.in_row[key] = 0 if ok else self.in_row.get(key, 0) + 1
        if ok or key in self.ejected:
            return False
        rated = [r.count(False) / len(r) for r in self.recent.values() if len(r) >= MIN_REQUESTS]
        pool = sum(rated) / len(rated) if rated else 0.0
        rate = recent.count(False) / len(recent)
        tipped = self.in_row[key] >= self.s.consecutive or (
            len(recent) >= MIN_REQUESTS and rate > 0.5 and rate > pool + self.s.rate_margin
        )
        if not tipped or (self.ejected and len(self.ejected) + 1 > self.s.max_share * pool_size):
            return False
        self.ejected.add(key)
        self.in_row[key] = 0
        recent.clear()
        return True


@pytest.mark.parametrize("seed", range(5))
def test_running_totals_eject_exactly_as_recomputing_would(seed: int) -> None:
    rng = random.Random(seed)
    settings = OutlierSettings(consecutive=8, rate_margin=0.2)
    fast, naive = OutlierDetector(settings), NaiveDetector(settings)
    keys = [f"e{i}" for i in range(12)]
    failing = {key: rng.choice((0.05, 0.3, 0.6, 0.8)) for key in keys}
    ejections = 0
    for n in range(6000):
        key = rng.choice(keys)
        ok = rng.random() >= failing[key]
        assert (fast.observe(key, ok, pool_size=len(keys)) is not None) == naive.observe(key, ok, len(keys))
        if n % 500 == 499:  # ejections end: both forget who was out
            ejections += len(fast.ejected)
            fast.ejected.clear()
            naive.ejected.clear()
        if n == 3000:
            fast.forget("e0")
            naive.recent.pop("e0")
            naive.in_row.pop("e0")
    assert ejections > 5  # the rules were exercised, not only agreed on in silence
