"""Reports that one client cannot forge: a quorum of reporters to eject, or one trusted reporter.

Reporters are told apart by their address: all of 127.0.0.0/8 is loopback on Linux, so each
client below binds its own (127.0.0.1 to .4). The server trusts 127.0.0.3 alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from swarm_discovery.balance.outliers import MIN_REQUESTS, OutlierSettings
from swarm_discovery.balance.quorum import MAX_EVIDENCE, MAX_REPORTERS, QuorumDetector, Reporters, ReportSettings
from swarm_discovery.core.core import Core, CoreSettings
from swarm_discovery.records import Report
from tests.fakes import FakeClock
from tests.helpers import put, unique
from tests.server import Server
from tests.test_core import spec

TRUSTED = "127.0.0.3"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Ejections outlast any test here, so that what they assert cannot end before it is read.
    s = Server(
        tmp_path_factory.mktemp("reports") / "data", args=("--ejection-base", "10m", "--trusted-reporter", TRUSTED)
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reporters(served: Server) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        address: httpx.Client(base_url=served.url, transport=httpx.HTTPTransport(local_address=address), timeout=10)
        for address in ("127.0.0.1", "127.0.0.2", TRUSTED, "127.0.0.4")
    }
    yield clients
    for client in clients.values():
        client.close()


def fleet(served: Server, count: int = 4) -> str:
    service = unique("rep")
    for i in range(count):
        put(served.http, service, f"i{i}")
    return service


def report(client: httpx.Client, service: str, iid: str, ok: bool, times: int = 1) -> dict[str, Any]:
    response = client.post("/v1/reports", json=[{"service": service, "id": iid, "ok": ok}] * times)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def ejected(served: Server, service: str) -> dict[str, str]:
    """Each ejected instance's reason."""
    shown = served.http.get(f"/v1/services/{service}", params={"all": "true"}).json()
    return {i["id"]: i["ejected"]["reason"] for i in shown if i.get("ejected")}


def test_one_reporters_forged_failures_eject_nothing(served: Server, reporters: dict[str, httpx.Client]) -> None:
    service = fleet(served)
    forger = reporters["127.0.0.1"]
    for iid in ("i0", "i1"):
        assert report(forger, service, iid, ok=False, times=1000) == {"accepted": 1000, "ignored": 0}
    assert ejected(served, service) == {}
    assert len(served.http.get(f"/v1/services/{service}").json()) == 4


def test_two_agreeing_reporters_eject(served: Server, reporters: dict[str, httpx.Client]) -> None:
    service = fleet(served)
    report(reporters["127.0.0.1"], service, "i0", ok=False, times=5)
    assert ejected(served, service) == {}
    report(reporters["127.0.0.2"], service, "i0", ok=False, times=5)
    assert ejected(served, service) == {"i0": "5 failures in a row (2 reporters agree)"}
    listed = [i["id"] for i in served.http.get(f"/v1/services/{service}").json()]
    assert listed == ["i1", "i2", "i3"]


def test_a_reporters_successes_do_not_mask_what_others_see(served: Server, reporters: dict[str, httpx.Client]) -> None:
    service = fleet(served)
    masker, first, second = (reporters[a] for a in ("127.0.0.1", "127.0.0.2", "127.0.0.4"))
    successes = [{"service": service, "id": "i0", "ok": True}] * 1000
    assert masker.post("/v1/reports", json=successes).status_code == 200
    report(first, service, "i0", ok=False, times=5)
    assert masker.post("/v1/reports", json=successes).status_code == 200
    assert ejected(served, service) == {}  # one vote so far
    report(second, service, "i0", ok=False, times=5)
    assert ejected(served, service) == {"i0": "5 failures in a row (2 reporters agree)"}


def test_a_trusted_reporter_alone_ejects(served: Server, reporters: dict[str, httpx.Client]) -> None:
    service = fleet(served)
    report(reporters[TRUSTED], service, "i2", ok=False, times=4)
    assert ejected(served, service) == {}  # four failures are not yet evidence, even from it
    report(reporters[TRUSTED], service, "i2", ok=False)
    assert ejected(served, service) == {"i2": "5 failures in a row (a trusted reporter)"}


def test_at_most_half_the_pool_is_ejected_whatever_the_reports_say(
    served: Server, reporters: dict[str, httpx.Client]
) -> None:
    service = fleet(served, 4)
    for client in reporters.values():
        for i in range(4):
            report(client, service, f"i{i}", ok=False, times=20)
    assert len(ejected(served, service)) == 2
    assert len(served.http.get(f"/v1/services/{service}").json()) == 2


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"],
)
def test_reports_a_browser_could_send_without_preflight_are_415_and_count_nothing(
    served: Server, reporters: dict[str, httpx.Client], content_type: str | None
) -> None:
    service = fleet(served)
    body = json.dumps([{"service": service, "id": "i0", "ok": False}])
    headers = {"content-type": content_type} if content_type else {}
    for _ in range(10):
        response = reporters[TRUSTED].post("/v1/reports", content=body, headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["error"].startswith("Content-Type: expected application/json")
    assert ejected(served, service) == {}
    # The same failures sent as JSON are counted, and from the trusted reporter eject at once.
    response = reporters[TRUSTED].post("/v1/reports", content=body, headers={"content-type": "application/json"})
    assert response.json() == {"accepted": 1, "ignored": 0}
    report(reporters[TRUSTED], service, "i0", ok=False, times=4)
    assert set(ejected(served, service)) == {"i0"}


def test_quorum_one_lets_any_reporter_eject(tmp_path: Path) -> None:
    s = Server(tmp_path / "data", args=("--ejection-base", "10m", "--report-quorum", "1"))
    s.start()
    try:
        service = fleet(s, 2)
        report(s.http, service, "i0", ok=False, times=5)
        assert ejected(s, service) == {"i0": "5 failures in a row (one reporter)"}
    finally:
        s.stop()


# --- balance/quorum.py, with a clock moved by hand ---------------------------------------------


def judged(*outcomes: bool, reporters: Reporters | None = None, who: str = "r") -> list[str | None]:
    judge = (reporters or Reporters()).judge(who)
    return [judge.observe("svc", "a", ok) for ok in outcomes]


def test_a_reporter_votes_on_failures_in_a_row_and_starts_again_after() -> None:
    assert judged(*[False] * 5)[-1] == "5 failures in a row"
    assert judged(False, False, True, False, False, False, False) == [None] * 7  # a success broke the row
    votes = judged(*[False] * 10)
    assert votes.count("5 failures in a row") == 2  # after its vote it needs five more


def test_a_reporter_votes_on_a_failure_rate_far_above_its_own() -> None:
    reporters = Reporters()
    judge = reporters.judge("r")
    for _ in range(200):  # the rest of its traffic is fine
        judge.observe("svc", "healthy", True)
    votes = [judge.observe("svc", "a", n % 4 == 0) for n in range(MIN_REQUESTS * 2)]  # 3 of 4 fail, never 5 in a row
    assert any(v is not None and v.startswith("failure rate") for v in votes)
    # A reporter for which everything fails that much has no outlier by rate.
    assert all(v is None for v in judged(*[n % 4 == 0 for n in range(MIN_REQUESTS * 2)], who="broken"))


def test_votes_count_once_per_reporter_and_only_within_the_window() -> None:
    clock = FakeClock()
    detector = QuorumDetector(OutlierSettings(), ReportSettings(quorum=3, window=30), clock)
    assert detector.vote("a", "r1", "why", False, pool_size=10) is None
    assert detector.vote("a", "r1", "why", False, pool_size=10) is None  # the same reporter again
    assert detector.vote("a", "r2", "why", False, pool_size=10) is None
    clock.advance(31)  # r1 and r2's votes are stale now
    assert detector.vote("a", "r3", "why", False, pool_size=10) is None
    assert detector.vote("a", "r4", "why", False, pool_size=10) is None
    ejection = detector.vote("a", "r1", "why", False, pool_size=10)
    assert ejection is not None and ejection.reason == "why (3 reporters agree)"
    assert detector.vote("b", "t", "why", True, pool_size=10) is not None


def test_what_reports_leave_behind_is_bounded() -> None:
    reporters = Reporters()
    judge = reporters.judge("r")
    for i in range(MAX_EVIDENCE * 4):  # a reporter failing everywhere keeps evidence on the latest only
        judge.observe("svc", f"i{i}", False)
    assert len(judge.evidence) == MAX_EVIDENCE
    assert ("svc", f"i{MAX_EVIDENCE * 4 - 1}") in judge.evidence and ("svc", "i0") not in judge.evidence
    judge.observe("svc", "ok", True)
    assert ("svc", "ok") not in judge.evidence  # successes alone keep nothing
    for n in range(MAX_REPORTERS + 10):
        reporters.judge(f"r{n}")
    assert len(reporters) == MAX_REPORTERS
    detector = QuorumDetector(OutlierSettings(), ReportSettings(quorum=2), FakeClock())
    assert detector.vote("b", "t", "why", True, pool_size=2) is not None  # half of a pool of two is out
    for n in range(100):
        assert detector.vote("a", f"r{n}", "why", False, pool_size=2) is None
    assert len(detector._votes["a"]) == 2  # the latest quorum's votes, waiting for room


def test_ejections_end_even_when_due_at_once_on_uvloop(tmp_path: Path) -> None:
    """uvloop answers call_later(0) with a Handle that has no `when()`: releases must not need it."""

    async def scenario() -> None:
        settings = CoreSettings(data_dir=str(tmp_path), outliers=OutlierSettings(base=0.0))
        core = Core(settings)
        await core.start()
        registry = core.registry
        try:
            for iid in ("a", "b"):
                await registry.register("svc", iid, spec())
            for iid in ("a", "b"):  # a pool of two: one at a time
                registry.report([Report(service="svc", id=iid, ok=False)] * 5, "gateway", trusted=True)
                assert registry.instance("svc", iid).view.ejected is not None
                for _ in range(200):
                    if registry.instance("svc", iid).view.ejected is None:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError(f"the ejection of {iid} never ended")
        finally:
            await core.stop()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        loop.close()
