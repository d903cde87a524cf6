"""Caps on instances per service and per registrant: a 429 naming the cap, and nothing written."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from swarm_discovery.core.core import Core, CoreSettings
from swarm_discovery.core.quotas import Quotas
from swarm_discovery.errors import TooBusy
from swarm_discovery.health.limits import ProbeSettings
from tests.backends import BlackHole
from tests.helpers import ids, instance, put, unique
from tests.server import Server
from tests.test_core import run, spec


def test_a_service_at_its_cap_takes_no_new_instance_but_replacements(tmp_path: Path) -> None:
    s = Server(tmp_path / "data", args=("--max-instances-per-service", "3"))
    s.start()
    try:
        service = unique("cap")
        for i in range(3):
            put(s.http, service, f"i{i}")
        refused = s.http.put(f"/v1/services/{service}/instances/i3", json=instance())
        assert refused.status_code == 429
        assert refused.json()["error"] == (
            f"service: {service!r} is at its cap of 3 instances (--max-instances-per-service)"
        )
        assert int(refused.headers["retry-after"]) > 0
        assert put(s.http, service, "i0", port=9000).json()["port"] == 9000  # a replacement adds nothing
        put(s.http, unique("other"), "i3")  # other services have caps of their own
        assert ids(s.http.get(f"/v1/services/{service}")) == ["i0", "i1", "i2"]
        s.http.delete(f"/v1/services/{service}/instances/i1")
        put(s.http, service, "i3")
        # After a restart the count comes from the store: still at the cap.
        s.stop()
        s.http = httpx.Client(base_url=s.url, timeout=10)
        s.start()
        assert s.http.put(f"/v1/services/{service}/instances/i4", json=instance()).status_code == 429
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-instances-per-service", "0"),
        ("--max-instances-per-registrant", "-1"),
        ("--report-quorum", "0"),
        ("--report-quorum", "17"),
        ("--write-rate", "-1"),
    ],
)
def test_caps_quorum_and_rate_are_checked_at_start(tmp_path: Path, flag: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swarm_discovery", "serve", "--data-dir", str(tmp_path), flag, value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and done.stderr.startswith(f"error: {flag}:"), done.stderr


async def _core(tmp_path: Path, quotas: Quotas, probes: ProbeSettings | None = None) -> Core:
    core = Core(CoreSettings(data_dir=str(tmp_path), quotas=quotas, probes=probes or ProbeSettings()))
    await core.start()
    return core


def test_a_registrant_at_its_cap_registers_nothing_more_anywhere(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await _core(tmp_path, Quotas(per_service=100, per_registrant=3))
        registry = core.registry
        try:
            await registry.register("a", "1", spec(), registrant="p1")
            await registry.register("b", "1", spec(), registrant="p1")
            await registry.register("b", "2", spec(), registrant="p1")
            with pytest.raises(TooBusy, match=r"registrant: p1 is at its cap of 3 .*--max-instances-per-registrant"):
                await registry.register("c", "1", spec(), registrant="p1")
            await registry.register("b", "2", spec(port=9), registrant="p1")  # replacing never counts twice
            await registry.register("c", "1", spec(), registrant="p2")  # another registrant has room
            await registry.register("a", "1", spec(), registrant="p2")  # moved to p2: p1 has room again
            assert registry.census.per_registrant == {"p1": 2, "p2": 2}
            await registry.register("d", "1", spec(), registrant="p1")
            await registry.set_maintenance("d", "1", True, "kept through a write")
            assert registry.size("c") == 1 and registry.size("d") == 1
        finally:
            await core.stop()
        # The registrant is stored with each instance: the counts survive a restart.
        core = await _core(tmp_path, Quotas(per_service=100, per_registrant=3))
        try:
            assert core.registry.census.per_registrant == {"p1": 3, "p2": 2}
            with pytest.raises(TooBusy):
                await core.registry.register("e", "1", spec(), registrant="p1")
            await core.registry.deregister("b", "1")
            await core.registry.register("e", "1", spec(), registrant="p1")
        finally:
            await core.stop()

    run(scenario())


def test_registrations_racing_to_the_cap_do_not_all_pass(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await _core(tmp_path, Quotas(per_service=5, per_registrant=100))
        try:
            results = await asyncio.gather(
                *(core.registry.register("svc", f"i{n}", spec()) for n in range(20)), return_exceptions=True
            )
            assert sum(not isinstance(r, BaseException) for r in results) == 5
            assert all(isinstance(r, TooBusy) for r in results if isinstance(r, BaseException))
            assert core.registry.size("svc") == 5
        finally:
            await core.stop()

    run(scenario())


def test_probes_are_shared_out_by_the_stored_registrant(tmp_path: Path) -> None:
    """Two services of one registrant share its probes in flight: its checks on a target that
    never answers hold its one place, and the other service's probes are skipped."""
    hole = BlackHole()

    async def scenario() -> None:
        core = await _core(tmp_path, Quotas(), ProbeSettings(per_registrant=1))
        registry = core.registry
        check = {"type": "http", "url": hole.urls[0], "interval": "100ms", "timeout": "10s"}
        try:
            for service in ("a", "b"):
                await registry.register(service, "1", spec(checks=[check]), registrant="provider-7")
            for _ in range(500):
                outputs = {c.output for service in ("a", "b") for c in registry.checks(service, "1")}
                if "probe skipped: provider-7 has 1 probes in flight (--probe-per-registrant)" in outputs:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"no probe was skipped for the registrant: {outputs}")
        finally:
            await core.stop()

    try:
        run(scenario())
    finally:
        hole.stop()
