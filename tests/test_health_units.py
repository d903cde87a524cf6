"""Thresholds, the scheduler's timing, deadlines, probers' bounds and the expiry guard, with a fake
clock, fake probers and backends on the test's own event loop."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import grpc
import pytest

from swarm_discovery.health.check import MAX_TIMEOUT, CheckRuntime, ProbeResult
from swarm_discovery.health.deadlines import Deadlines
from swarm_discovery.health.limits import ProbeGate, ProbeSettings
from swarm_discovery.health.monitor import HealthMonitor
from swarm_discovery.health.probes import GrpcProber, HttpProber, Prober, TcpProber
from swarm_discovery.health.protection import ExpiryGuard, ExpirySettings
from swarm_discovery.health.scheduler import Scheduler
from swarm_discovery.health.targets import TargetDenied, TargetPolicy, networks
from swarm_discovery.records import CheckSpec
from tests.backends import GrpcBackend, HttpBackend, StreamingBackend
from tests.fakes import FakeClock

OK = ProbeResult("passing", "ok")
SLOW = ProbeResult("warning", "slow")
FAIL = ProbeResult("critical", "boom")
OPEN = TargetPolicy()  # probes may go anywhere


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
        self.forgotten: list[str] = []
        self.release = asyncio.Event()

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        self.started.append((asyncio.get_running_loop().time(), check.name))
        if check.name == "slow":
            await self.release.wait()
        if check.name == "bad":
            raise ValueError("no\r\nsuch target")
        return OK

    def forget(self, check: CheckRuntime) -> None:
        self.forgotten.append(check.name)

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
                name,
                CheckRuntime(CheckSpec(type="http", url="http://x/", name=name, interval="200ms"), 0, now=0.0),
                "svc",
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
        assert prober.forgotten == ["a"]  # so that the prober can drop what only "a" used
        await scheduler.stop()

    asyncio.run(scenario())


def probe_check(kind: str, **fields: object) -> CheckRuntime:
    spec = CheckSpec(type=kind, interval="100ms", **fields)  # type: ignore[arg-type]
    return CheckRuntime(spec, 0, now=0.0)


async def scheduled(prober: Prober, check: CheckRuntime, rounds: int = 3) -> list[ProbeResult]:
    """What the scheduler reports for `check` over `rounds` intervals, applied to the check."""
    results: list[ProbeResult] = []

    def sink(key: Hashable, result: ProbeResult) -> None:
        results.append(result)
        check.observe(result, 0.0)

    scheduler = Scheduler(sink, {check.spec.type: prober}, clock=asyncio.get_running_loop().time, jitter=lambda: 0.0)
    scheduler.start()
    scheduler.add("k", check, "svc")
    await asyncio.sleep(check.interval * (rounds - 0.5))
    await scheduler.stop()
    return results


def test_a_prober_that_raises_fails_the_probe_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    check = probe_check("http", url="http://x/", name="bad", initial_status="passing")
    results = asyncio.run(scheduled(FakeProber(), check))
    assert len(results) == 3 and {r.status for r in results} == {"critical"}
    assert results[0].output == "probe failed: ValueError: no such target"  # one line
    assert check.status == "critical"
    assert len([r for r in caplog.records if r.name == "swarm.health"]) == 1  # not one per interval


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda _: probe_check("tcp", tcp=f"{'a' * 64}.example:80", initial_status="passing"), "UnicodeError"),
        (
            lambda url: probe_check("http", url=url, headers={"X-Probe": "a\r\nInjected: 1"}, initial_status="passing"),
            "ValueError",
        ),
    ],
    ids=["tcp-64-character-label", "http-crlf-header"],
)
def test_a_target_the_prober_cannot_take_goes_critical(make: Callable[[str], CheckRuntime], error: str) -> None:
    backend = HttpBackend()
    try:
        check = make(backend.url)
        prober = TcpProber(OPEN) if check.spec.type == "tcp" else HttpProber(OPEN, 16)
        results = asyncio.run(scheduled(prober, check))
    finally:
        backend.stop()
    assert results and results[-1].output.startswith(f"probe failed: {error}: ")
    assert check.status == "critical" and backend.hits == 0  # and nothing was sent


def test_timeouts_are_capped() -> None:
    assert probe_check("http", url="http://x/", timeout="1h").timeout == MAX_TIMEOUT == 30.0
    assert probe_check("http", url="http://x/", timeout="300ms").timeout == 0.3


def on_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_an_endless_body_is_not_read() -> None:
    async def scenario() -> None:
        backend = StreamingBackend(body_size=None)
        await backend.start()
        prober = HttpProber(OPEN, 16)
        started = time.perf_counter()
        result = await prober.probe(probe_check("http", url=backend.url, timeout="2s"))
        took = time.perf_counter() - started
        await asyncio.wait_for(backend.closed.wait(), 2.0)  # the connection was dropped, not drained
        await prober.close()
        await backend.stop()
        assert result.status == "passing" and ": 200 OK" in result.output
        assert took < 1.0 and backend.sent < 32 * 2**20  # what socket buffers hold, not 2 s of streaming

    on_loop(scenario)


@pytest.mark.parametrize(("size", "connections"), [(1000, 1), (32 * 2**20, 3)])
def test_short_bodies_keep_their_connection_long_ones_lose_it(size: int, connections: int) -> None:
    async def scenario() -> None:
        backend = StreamingBackend(body_size=size)
        await backend.start()
        prober = HttpProber(OPEN, 16)
        check = probe_check("http", url=backend.url)
        results = [await prober.probe(check) for _ in range(3)]
        await prober.close()
        await backend.stop()
        assert [r.status for r in results] == ["passing"] * 3
        assert backend.connections == connections  # a long body is not read to its end: the connection goes

    on_loop(scenario)


def test_grpc_channels_are_shared_and_closed_with_their_last_check() -> None:
    backend = GrpcBackend()
    backend.set("svc", True)

    async def scenario() -> None:
        prober = GrpcProber(OPEN)
        whole = probe_check("grpc", grpc=backend.target)
        named = probe_check("grpc", grpc=f"{backend.target}/svc")
        refused = probe_check("grpc", grpc="127.0.0.1:1", timeout="500ms")
        for check in (whole, named, refused):
            await prober.probe(check)
        channel = prober._channels[backend.target][1]
        assert len(prober._channels) == 2
        prober.forget(whole)
        assert prober._channels[backend.target][1] is channel  # the named check still uses it
        assert (await prober.probe(named)).status == "passing"
        prober.forget(named)
        await asyncio.sleep(0.05)
        assert backend.target not in prober._channels
        assert channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
        prober.forget(refused)
        prober.forget(refused)  # twice, or never probed: nothing to do
        assert not prober._channels
        await prober.close()

    try:
        on_loop(scenario)
    finally:
        backend.stop()


def test_removed_checks_leave_no_grpc_channel() -> None:
    async def scenario() -> None:
        prober = GrpcProber(OPEN)
        scheduler = Scheduler(lambda key, result: None, {"grpc": prober}, jitter=lambda: 0.0)
        scheduler.start()
        for port in range(1, 201):  # distinct targets, nothing listening: each fails at once
            scheduler.add(port, probe_check("grpc", grpc=f"127.0.0.1:{port}", timeout="200ms"), "svc")
        await asyncio.sleep(0.3)
        assert len(prober._channels) == 200
        for port in range(1, 201):
            scheduler.remove(port)
        assert not prober._channels
        await scheduler.stop()

    on_loop(scenario)


def test_monitor_stop_leaves_no_task_behind(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        prober = FakeProber()
        scheduler = Scheduler(lambda key, result: monitor.report(key, result), {"http": prober}, jitter=lambda: 0.0)
        monitor = HealthMonitor(lambda owner: None, lambda owner: None, scheduler=scheduler)
        await monitor.stop()  # never started: nothing to stop
        monitor.start()
        specs = [CheckSpec(type="http", url="http://x/", name=name, interval="100ms") for name in ("slow", "bad")]
        monitor.track(("instance", "svc", "a"), [*specs, CheckSpec(type="ttl", ttl="1s")])
        await asyncio.sleep(0.25)
        assert {name for _, name in prober.started} == {"slow", "bad"}  # "slow" is still in flight
        await asyncio.wait_for(monitor.stop(), 1.0)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    on_loop(scenario)
    gc.collect()
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]  # nothing never retrieved


def test_untrack_tells_the_prober() -> None:
    async def scenario() -> None:
        prober = FakeProber()
        monitor = HealthMonitor(lambda owner: None, lambda owner: None, scheduler=Scheduler(print, {"http": prober}))
        owner = ("instance", "svc", "a")
        checks = monitor.track(owner, [CheckSpec(type="ttl", ttl="1s"), CheckSpec(type="http", url="http://x/")])
        monitor.untrack(owner, checks)
        assert prober.forgotten == ["http-1"]

    on_loop(scenario)


def test_deadlines_compact_their_heap() -> None:
    clock = FakeClock()
    fired: list[tuple[Hashable, float]] = []

    def expire(key: Hashable, due: float) -> None:
        if key == "bad":
            raise RuntimeError("a callback's bug")
        fired.append((key, due))

    deadlines = Deadlines(expire, clock)
    last: dict[Hashable, float] = {}
    for renewal in range(100_000):  # ten keys heartbeating: every renewal pushes an entry
        clock.advance(0.0001)
        deadlines.set(renewal % 10, 30.0)
        last[renewal % 10] = clock() + 30.0
    assert len(deadlines._heap) <= 64
    deadlines.cancel(9)
    deadlines.set("bad", 29.0)
    clock.advance(31.0)
    deadlines.expire_due()  # the raising callback is logged, and the rest still fire
    assert fired == [(key, last[key]) for key in range(9)]  # once each, at its latest deadline, in order
    assert deadlines.next_due_in() is None
    for key in range(1000):  # and cancelling many compacts it too
        deadlines.set(key, 5.0)
    for key in range(990):
        deadlines.cancel(key)
    assert len(deadlines._heap) <= 64


def test_expiry_guard() -> None:
    guard = ExpiryGuard(ExpirySettings(share=0.5, minimum=3))
    for key in range(6):
        guard.expect(key, f"svc-{key}")
    guard.lapsed(0)
    guard.lapsed(1)
    guard.lapsed(2)
    assert not guard.holds()  # 3 of 6 is not over half
    guard.lapsed(3)
    assert guard.holds()
    guard.renewed(3)
    assert not guard.holds()
    small = ExpiryGuard(ExpirySettings(share=0.5, minimum=3))
    small.expect("a", "svc-a")
    small.expect("b", "svc-b")
    small.lapsed("a")
    small.lapsed("b")
    assert not small.holds()  # all of them, but too few to mean anything


def test_one_registrants_silence_does_not_hold_expiry() -> None:
    guard = ExpiryGuard(ExpirySettings(share=0.5, minimum=10, owners=3))  # each counts at most 4 checks
    for i in range(30):
        guard.expect(("big", i), "svc-big")
        guard.lapsed(("big", i))
    assert not guard.holds()  # all 30 lapsed, but they are one registrant's
    for name in ("a", "b"):
        for i in range(4):
            guard.expect((name, i), f"svc-{name}")
            guard.lapsed((name, i))
    assert guard.holds()  # three registrants, all silent at once: more likely the server's fault
    for name in "cdefgh":
        for i in range(4):
            guard.expect((name, i), f"svc-{name}")
    assert not guard.holds()  # 12 of 36 counted; uncapped, svc-big's 30 would make it 38 of 62
    for i in range(30):
        guard.forget(("big", i))
    assert (guard._all.capped, guard._lapsed.capped, guard._lapsed.counts) == (32, 8, {"svc-a": 4, "svc-b": 4})


def test_a_skipped_probe_changes_only_the_output() -> None:
    check = runtime(initial_status="passing")
    assert not check.observe(ProbeResult("critical", "probe skipped: busy", skipped=True), 1)
    assert (check.status, check.output, check.failures) == ("passing", "probe skipped: busy", 0)
    assert check.last_checked is None  # it was not checked


def test_probe_gate_bounds_in_flight_per_target_and_registrant() -> None:
    gate = ProbeGate(ProbeSettings(per_target=2, per_registrant=3))
    one, two, three = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
    assert gate.admit("a", one) is None and gate.admit("a", one) is None
    assert gate.admit("a", one) == "probe skipped: 127.0.0.1:1 has 2 probes in flight (--probe-per-target)"
    assert gate.admit("a", two) is None
    assert gate.admit("a", three) == "probe skipped: a has 3 probes in flight (--probe-per-registrant)"
    assert gate.admit("b", three) is None  # another registrant has its own share
    assert gate.admit("b", one) is not None
    gate.release("a", one)
    assert gate.admit("b", one) is None
    for registrant, target in (("a", one), ("a", two), ("b", three), ("b", one)):
        gate.release(registrant, target)
    assert (gate._in_flight, gate._per_target, gate._per_registrant) == (0, {}, {})


def test_probe_gate_meters_each_registrant() -> None:
    clock = FakeClock()
    gate = ProbeGate(ProbeSettings(rate=5), clock)
    target = ("127.0.0.1", 1)
    gate.join("a")
    results = [gate.admit("a", target) for _ in range(6)]
    assert results[:5] == [None] * 5  # a burst of one second's worth
    assert results[5] == "probe skipped: a is over 5 probes/s (--probe-rate)"
    assert gate.admit("b", target) is None
    clock.advance(0.2)
    assert gate.admit("a", target) is None and gate.admit("a", target) is not None
    gate.leave("a")
    assert "a" not in gate._buckets  # a registrant's bucket goes with its last check


def test_target_policy() -> None:
    assert len(networks(["loopback", "link-local", "10.0.0.0/8"])) == 7
    with pytest.raises(ValueError, match="expected a CIDR"):
        networks(["127.0.0.0/33"])
    policy = TargetPolicy(allow=["127.0.0.0/8"], deny=["127.0.0.2"], server=("127.0.0.1", 8500))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 80) is None
    assert (
        policy.refusal(ipaddress.ip_address("127.0.0.2"), 80) == "target denied by --probe-deny 127.0.0.2/32: 127.0.0.2"
    )
    assert policy.refusal(ipaddress.ip_address("::1"), 80) == "target denied: ::1 is outside every --probe-allow"
    own = "target denied: 127.0.0.5:8500 is this server's own address"
    assert policy.refusal(ipaddress.ip_address("127.0.0.5"), 8500) == own


def test_names_are_resolved_once_and_only_allowed_addresses_used() -> None:
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.3")]

    async def scenario() -> None:
        policy = TargetPolicy(deny=["127.0.0.2"], getaddrinfo=getaddrinfo)
        assert await policy.resolve("svc.test", 80) == [(socket.AF_INET, "127.0.0.3")]
        assert await policy.resolve("::ffff:7f00:3", 80) == [(socket.AF_INET6, "::ffff:7f00:3")]
        with pytest.raises(TargetDenied, match=r"^target denied by --probe-deny 127.0.0.2/32: 127.0.0.2$"):
            await policy.resolve("::ffff:7f00:2", 80)  # 127.0.0.2, written as IPv6
        strict = TargetPolicy(deny=["127.0.0.0/8"], getaddrinfo=getaddrinfo)
        with pytest.raises(TargetDenied, match=r"127\.0\.0\.2"):
            await strict.resolve("svc.test", 80)
        assert asked == ["svc.test", "svc.test"]  # addresses need no lookup

    on_loop(scenario)


def test_an_http_probe_to_a_denied_name_sends_nothing() -> None:
    backend = HttpBackend()

    async def scenario() -> None:
        prober = HttpProber(TargetPolicy(deny=["loopback"]), 16)
        by_name = await prober.probe(probe_check("http", url=f"http://localhost:{backend.port}/health"))
        by_address = await prober.probe(probe_check("http", url=backend.url))
        await prober.close()
        assert by_name.status == "critical" and by_name.output.startswith("target denied by --probe-deny ")
        assert by_address.output == "target denied by --probe-deny 127.0.0.0/8: 127.0.0.1"

    try:
        on_loop(scenario)
    finally:
        backend.stop()
    assert backend.hits == 0


def test_a_lapse_from_the_store_lapses_a_ttl_before_its_timer() -> None:
    """A TTL lease that ended in a shared store lapses the check now, through the guard's window
    like a timer's lapse; a check that lapsed already, or has no TTL, is left as it is."""

    async def scenario() -> None:
        changed: list[object] = []
        guard = ExpiryGuard(ExpirySettings(window=0.05))
        monitor = HealthMonitor(changed.append, lambda owner: None, scheduler=Scheduler(print, {}), guard=guard)
        monitor.start()
        owner = ("instance", "svc", "a")
        checks = monitor.track(owner, [CheckSpec(type="ttl", ttl="1h")])
        monitor.lapse(owner, checks)
        deadline = time.monotonic() + 2
        while not changed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert changed == [owner] and checks[0].status == "critical"
        monitor.lapse(owner, checks)  # lapsed already: nothing more
        await asyncio.sleep(0.1)
        assert changed == [owner]
        await monitor.stop()

    on_loop(scenario)
