"""Write rate limits per caller: a 429 with Retry-After past the rate, nothing written, and other
callers unaffected. Callers are told apart by their address (all of 127.0.0.0/8 is loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


def test_buckets_refill_at_the_rate_and_the_least_recent_caller_is_forgotten() -> None:
    clock = FakeClock()
    rates = Rates(10, keys=3, clock=clock)
    for _ in range(10):  # a second's worth at once
        rates.take("a")
    with pytest.raises(TooBusy) as refused:
        rates.take("a")
    assert refused.value.retry_after == 1
    clock.advance(0.1)
    rates.take("a")  # a tenth of a second later, one more
    for key in ("b", "c", "d"):
        rates.take(key)
    assert len(rates) == 3  # "a" was the least recently seen: forgotten
    rates.take("a")  # ... and starts again with a full bucket
    Rates(0).take("anyone")  # rate 0 limits nothing
