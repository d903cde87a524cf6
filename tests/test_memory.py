"""What keeps an instance small: shared parts, bounded encodings, a history without old versions,
and selector bindings that share the record's values instead of copying them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from swarm_discovery.core.changes import Change, ChangeLog, Event
from swarm_discovery.core.core import Core, CoreSettings
from swarm_discovery.core.published import ENCODINGS, Encodings, Published, plain
from swarm_discovery.core.shared import Pool, Shared
from swarm_discovery.records import CheckState, Ejection, Heartbeat, InstanceSpec, InstanceView, Maintenance


def spec(**fields: Any) -> InstanceSpec:
    return msgspec.convert({"address": "10.0.0.1", "port": 8000, **fields}, InstanceSpec)


def test_equal_parts_are_held_once_and_unequal_encodings_never_merge() -> None:
    shared = Shared()
    first = spec(tags=["a"], meta={"k": "v"}, location={"region": "eu"}, capabilities={"n": 1})
    second = spec(tags=["a"], meta={"k": "v"}, location={"region": "eu"}, capabilities={"n": 1})
    third = spec(tags=["a"], capabilities={"n": 1.0})  # 1.0 is not 1: CEL and JSON tell them apart
    for each in (first, second, third):
        shared.spec(each)
    assert first.tags is second.tags is third.tags
    assert first.meta is second.meta and first.location is second.location
    assert first.capabilities is second.capabilities and third.capabilities is not first.capabilities
    assert msgspec.json.encode(third.capabilities) == b'{"n":1.0}'


def test_metric_names_are_shared_and_values_kept() -> None:
    shared = Shared()
    one, other = shared.metrics({"queue_depth": 1.0}), shared.metrics({"".join(["queue_", "depth"]): 2.0})
    assert next(iter(one)) is next(iter(other)) and other == {"queue_depth": 2.0}


def test_a_pool_forgets_what_no_record_holds_any_more() -> None:
    pool = Pool()
    kept = [pool.share([n]) for n in range(3)]
    pool.share(["gone"])
    pool._sweep()
    assert len(pool) == 3 and pool.share([0]) is kept[0]


def view(**fields: Any) -> InstanceView:
    base: dict[str, Any] = {"address": "a", "port": 1, "status": "passing", "index": 1}
    return msgspec.convert({**base, "registered_at": 1.0, "updated_at": 2.0, **fields}, InstanceView)


def deep_plain(record: InstanceView) -> dict[str, Any]:
    """What selectors saw before bindings shared the record's values: a deep copy, defaults filled in."""
    defaults = {
        f.encode_name: msgspec.to_builtins(f.default_factory() if f.default is msgspec.NODEFAULT else f.default)
        for f in msgspec.structs.fields(InstanceView)
        if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
    }
    found = {**defaults, **msgspec.to_builtins(record)}
    found["check_states"] = list(found["check_states"])
    return found


def test_selector_bindings_equal_a_deep_copy_and_share_the_records_values() -> None:
    full = view(
        tags=["x"],
        location={"region": "eu", "lat": 1.5},
        capabilities={"gpu": {"memory_gb": 80}, "models": ["m"]},
        checks=[{"type": "ttl", "ttl": "5s"}],
        metrics={"q": 1.0},
    )
    full.check_states = (CheckState(name="ttl", type="ttl", status="passing", output="ok"),)
    full.maintenance = Maintenance(reason="r", since=3.0)
    full.ejected = Ejection(reason="e", until=4.0, count=1)
    for record in (full, view()):
        found = plain(record)
        assert found == deep_plain(record)
        assert type(found["check_states"]) is list and type(found["checks"]) is list
    assert plain(full)["capabilities"] is full.capabilities  # shared, not copied


def test_encodings_stay_within_their_bound_and_keep_what_is_read() -> None:
    encodings = Encodings(max_bytes=10 * len(msgspec.json.encode(view())))
    versions = [Published.of(view(index=n), {}) for n in range(30)]
    hot = versions[0]
    for version in versions:
        encoded = msgspec.json.encode(version.view)
        encodings.keep(version, encoded)
        hot._used = True  # read again while the others came in
        assert encodings.bytes <= encodings.max_bytes
    assert hot._json is not None and versions[1]._json is None
    encodings.forget(hot)
    assert hot._json is None and len(encodings) <= 10


def test_a_write_reply_keeps_no_encoding_that_no_reader_asked_for() -> None:
    version = Published.of(view(index=1), {})
    kept = len(ENCODINGS)
    assert version.reply == msgspec.json.encode(version.view)
    assert version._json is None and len(ENCODINGS) == kept
    assert version.json is version.reply  # once a reader has kept it, a reply is that encoding
    ENCODINGS.forget(version)


def test_the_history_keeps_recent_versions_and_only_names_older_changes() -> None:
    log = ChangeLog(history_size=6, recent=2)
    versions = [Published.of(view(index=n), {}) for n in range(8)]
    for n, version in enumerate(versions, 1):
        log.record(Event(log.next(), "svc", f"i{n % 3}", version))
    found = log.since(2)
    assert found is not None and [e.index for e in found] == [3, 4, 5, 6, 7, 8]
    assert [type(e) for e in found] == [Change] * 4 + [Event] * 2
    assert log.since(1) is None  # the first two have gone


def test_the_history_ages_in_batches_and_still_reaches_back_as_far_as_it_holds() -> None:
    log = ChangeLog(history_size=20, recent=8)  # ages two at a time
    version = Published.of(view(index=0), {})
    for n in range(1, 61):
        log.record(Event(log.next(), "svc", f"i{n % 5}", version))
        reachable = [k for k in range(n + 1) if log.since(k) is not None]
        assert reachable == list(range(reachable[0], n + 1)) and reachable[0] <= max(0, n - 20)
        for k in reachable:
            found = log.since(k)
            assert found is not None and [e.index for e in found] == list(range(k + 1, n + 1))
        kept = [e for e in log.since(reachable[0]) or [] if type(e) is Event]
        assert min(n, 8) <= len(kept) <= 10  # the latest 8 keep their versions, at most 2 more


def test_replayed_history_sends_what_older_changes_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("swarm_discovery.core.registry.QUIET_EVERY", 0.0)  # new metrics show at once
    monkeypatch.setattr("swarm_discovery.core.changes.RECENT", 1)  # all but the latest change lose their version

    async def scenario() -> None:
        core = Core(CoreSettings(data_dir=str(tmp_path)))
        await core.start()
        registry = core.registry
        try:
            start = registry.index
            await registry.register("svc", "a", spec())
            await registry.register("svc", "b", spec())
            registry.heartbeat("svc", "a", Heartbeat(metrics={"q": 1.0}))
            await registry.deregister("svc", "b")
            await registry.register("svc", "c", spec())
            events = registry.history_since(start)
            assert events is not None
            replayed = [(e.id, e.state.view.metrics if e.state else None) for e in events]
            assert replayed == [("a", {"q": 1.0}), ("b", None), ("c", {})]
            assert [e.index for e in events] == sorted(e.index for e in events)
        finally:
            await core.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
