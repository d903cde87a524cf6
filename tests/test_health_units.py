"""Thresholds, the scheduler's timing and the expiry guard, with a fake clock and a fake prober."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from swarm_discovery.health.check import CheckRuntime, ProbeResult
from swarm_discovery.health.protection import ExpiryGuard, ExpirySettings
from swarm_discovery.health.scheduler import Scheduler
from swarm_discovery.records import CheckSpec

OK = ProbeResult("passing", "ok")
SLOW = ProbeResult("warning", "slow")
FAIL = ProbeResult("critical", "boom")


def runtime(**fields: object) -> CheckRuntime:
    return CheckRuntime(CheckSpec(type="http", url="http://x/", **fields), 0, now=0.0)  # type: ignore[arg-type]


def test_thresholds_need_consecutive_results() -> None:
    check = runtime(
        success_before_passing=2, failures_before_warning=1, failures_before_critical=3, initial_status="passing"
    )
    assert not check.observe(OK, 1)
    assert check.observe(FAIL, 2) and check.status == "warning"
    assert not check.observe(FAIL, 3) and check.status == "warning"
    assert check.observe(FAIL, 4) and check.status == "critical" and check.critical_since == 4
    assert not check.observe(OK, 5) and check.status == "critical"  # one success is not enough
    assert not check.observe(FAIL, 6)  # and a failure resets the count
    assert not check.observe(OK, 7)
    assert check.observe(OK, 8) and check.status == "passing" and check.critical_since is None
    assert (check.successes, check.failures) == (2, 0)


def test_defaults_flip_at_once_and_probes_start_critical() -> None:
    check = runtime()
    assert check.status == "critical" and check.output == "waiting for the first probe"
    assert check.observe(OK, 1) and check.status == "passing"
    assert check.observe(SLOW, 2) and check.status == "warning"
    assert check.observe(FAIL, 3) and check.status == "critical"


def test_output_is_bounded() -> None:
    check = runtime()
    check.observe(ProbeResult("critical", "x" * 10_000), 1)
    assert len(check.output) == 512


class FakeProber:
    def __init__(self) -> None:
        self.started: list[tuple[float, str]] = []
        self.release = asyncio.Event()

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        self.started.append((asyncio.get_running_loop().time(), check.name))
        if check.name == "slow":
            await self.release.wait()
        return OK

    async def close(self) -> None:
        pass


def test_scheduler_spreads_first_probes_and_never_overlaps_a_check() -> None:
    async def scenario() -> None:
        reports: list[Hashable] = []
        prober = FakeProber()
        jitters = iter([0.0, 0.5, 0.9])
        scheduler = Scheduler(
            lambda key, result: reports.append(key),
            {"http": prober},
            clock=asyncio.get_running_loop().time,
            jitter=lambda: next(jitters),
        )
        scheduler.start()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for name in ("a", "b", "slow"):
            scheduler.add(
                name, CheckRuntime(CheckSpec(type="http", url="http://x/", name=name, interval="200ms"), 0, now=0.0)
            )
        await asyncio.sleep(0.75)
        offsets = {name: round(at - begin, 2) for at, name in prober.started if name in "ab" and at - begin < 0.2}
        assert offsets["a"] < 0.03 and 0.08 < offsets["b"] < 0.14  # spread by jitter x interval
        assert sum(1 for _, name in prober.started if name == "a") >= 3  # fixed rate goes on
        assert [name for _, name in prober.started].count("slow") == 1  # still running: rounds are skipped
        assert "slow" not in reports
        prober.release.set()
        await asyncio.sleep(0.3)
        assert "slow" in reports
        scheduler.remove("a")
        count = [name for _, name in prober.started].count("a")
        await asyncio.sleep(0.3)
        assert [name for _, name in prober.started].count("a") == count
        await scheduler.stop()

    asyncio.run(scenario())


def test_expiry_guard() -> None:
    guard = ExpiryGuard(ExpirySettings(share=0.5, minimum=3))
    for key in range(6):
        guard.expect(key)
    guard.lapsed(0)
    guard.lapsed(1)
    guard.lapsed(2)
    assert not guard.holds()  # 3 of 6 is not over half
    guard.lapsed(3)
    assert guard.holds()
    guard.renewed(3)
    assert not guard.holds()
    small = ExpiryGuard(ExpirySettings(share=0.5, minimum=3))
    small.expect("a")
    small.expect("b")
    small.lapsed("a")
    small.lapsed("b")
    assert not small.holds()  # all of them, but too few to mean anything
