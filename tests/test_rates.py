"""Write rate limits per caller: a 429 with Retry-After past the rate, nothing written, and other
callers unaffected. Callers are told apart by their address (all of 127.0.0.0/8 is loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swarm_discovery.buckets import Buckets
from swarm_discovery.errors import TooBusy
from swarm_discovery.fronts.http.rates import Rates
from tests.fakes import FakeClock
from tests.helpers import ids, instance, put, unique
from tests.server import Server


@pytest.fixture
def slow_writes(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data", args=("--write-rate", "1"))  # one write a second, in bursts of one
    s.start()
    yield s
    s.stop()


def test_a_caller_over_the_rate_gets_429_and_writes_nothing(slow_writes: Server) -> None:
    service = unique("rate")
    hasty = httpx.Client(base_url=slow_writes.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with hasty:
        answers = [hasty.put(f"/v1/services/{service}/instances/i{n}", json=instance()) for n in range(10)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "ten writes in a row at one a second, and none refused"
        assert {a.status_code for a in answers} == {200, 429}
        assert int(refused[0].headers["retry-after"]) >= 1
        assert refused[0].json()["error"] == "too many writes from 127.0.0.2: at most 1 a second (--write-rate)"
        written = [f"i{n}" for n, a in enumerate(answers) if a.status_code == 200]
        assert ids(hasty.get(f"/v1/services/{service}")) == written  # reads are not limited
        for path in ("/v1/reports", f"/v1/nodes/{service}"):  # nor is any other write exempt
            assert hasty.request("POST" if "reports" in path else "PUT", path, json={}).status_code == 429
    put(slow_writes.http, service, "other")  # another address still writes at once
    assert ids(slow_writes.http.get(f"/v1/services/{service}")) == sorted([*written, "other"])


def test_buckets_refill_at_the_rate_and_the_caller_in_debt_is_not_the_one_forgotten() -> None:
    clock = FakeClock()
    rates = Rates(10, keys=3, clock=clock)
    for _ in range(10):  # a second's worth at once
        rates.take("a")
    with pytest.raises(TooBusy) as refused:
        rates.take("a")
    assert refused.value.retry_after == 1
    clock.advance(0.1)
    rates.take("a")  # a tenth of a second later, one more
    for key in ("b", "c", "d"):  # past the bound: those nearest to full go, not "a"
        rates.take(key)
    assert len(rates) <= 3
    with pytest.raises(TooBusy):
        rates.take("a")
    clock.advance(1.0)
    for _ in range(10):  # full again after a second
        rates.take("a")
    Rates(0).take("anyone")  # rate 0 limits nothing


def test_buckets_stay_within_their_bound_and_forget_the_full_ones_first() -> None:
    buckets: Buckets[int] = Buckets(rate=1.0, burst=2.0, keys=100)
    assert buckets.take(-1, now=0.0) == 0.0 and buckets.take(-1, now=0.0) == 0.0
    assert buckets.take(-1, now=0.0) == pytest.approx(1.0)  # empty: a token a second
    for key in range(1000):
        assert buckets.take(key, now=10.0 + key) == 0.0  # each caller once, a second apart
        assert len(buckets) <= 100
    assert 999 in buckets and 0 not in buckets  # the newest are furthest from full
    assert buckets.take(999, now=1009.0) == 0.0 and buckets.take(999, now=1009.0) == pytest.approx(1.0)


def test_a_whole_burst_at_any_clock_value() -> None:
    for rate, now in ((1000.0, 1e5), (1000.0, 1e7), (7.0, 1e7), (2000.0, 3.3e6), (0.5, 1e9)):
        buckets: Buckets[str] = Buckets(rate=rate, burst=rate)
        given = 0
        while buckets.take("c", now) == 0.0:
            given += 1
        assert given == max(int(rate), 1), (rate, now)
        assert buckets.take("c", now + 1.0 / rate) == 0.0  # one more a 1/rate later, rounding or not
        assert buckets.take("c", now + 1.0 / rate) > 0.0
