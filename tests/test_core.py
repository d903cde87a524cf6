"""The core's modules one by one: the change log, the registry over a real store, the lookup and
the answer cache. Each runs on a real event loop with a real SQLite store in a temporary directory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pytest

from swarm_discovery.core.answers import AnswerCache
from swarm_discovery.core.changes import ChangeLog
from swarm_discovery.core.core import Core, CoreSettings
from swarm_discovery.core.lookup import Query
from swarm_discovery.errors import BadRequest, NotFound
from swarm_discovery.fronts.http.app import create_front
from swarm_discovery.records import Heartbeat, InstanceRecord, InstanceSpec, Report
from swarm_discovery.store import Compacted, Put, SqliteStore


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 30))


def spec(**fields: Any) -> InstanceSpec:
    return msgspec.convert({"address": "10.0.0.1", "port": 8000, **fields}, InstanceSpec)


async def started(tmp_path: Path, store: SqliteStore | None = None) -> Core:
    core = Core(CoreSettings(data_dir=str(tmp_path)), store=store)
    await core.start()
    return core


# --- the change log ------------------------------------------------------------------------


def test_waiting_on_topics_nobody_touches_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        log = ChangeLog()
        await asyncio.gather(*(log.wait(f"service/nosuch-{i}", 0, 0.01) for i in range(10_000)))
        assert log.waiting_topics == 0
        waiting = asyncio.ensure_future(log.wait("service/a", 0, 10))
        await asyncio.sleep(0)
        assert log.waiting_topics == 1
        log.touch(["service/a"], log.next())
        await asyncio.wait_for(waiting, 1)
        assert log.waiting_topics == 0

    run(scenario())


def test_closing_the_log_answers_every_waiter_at_once() -> None:
    async def scenario() -> None:
        log = ChangeLog()
        waiters = [asyncio.ensure_future(log.wait("catalog", 0, 600)) for _ in range(100)]
        await asyncio.sleep(0)
        log.close()
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        started = time.monotonic()
        await log.wait("catalog", 0, 600)  # after closing, waits return at once
        assert time.monotonic() - started < 0.5

    run(scenario())


def test_the_index_follows_store_revisions_but_never_goes_back() -> None:
    log = ChangeLog()
    assert log.advance(5) == 5  # nothing live in between: the index is the revision
    assert log.next() == 6
    assert log.advance(6) == 7  # a live change took 6: the next durable one goes after it


# --- the registry over a real store ---------------------------------------------------------


class SlowCommits(SqliteStore):
    """Every COMMIT takes half a second, like a disk that is struggling."""

    delayed: set[asyncio.Future[None]] = set()

    def _in_thread(self, work: Callable[[], object]) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await asyncio.sleep(0.5)
            await super(SlowCommits, self)._in_thread(work)
            done.set_result(None)

        self.delayed.add(asyncio.ensure_future(later()))
        return done


def test_live_state_never_waits_behind_a_disk_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path, SlowCommits(str(tmp_path)))
        registry = core.registry
        try:
            await registry.register("svc", "a", spec(checks=[{"type": "ttl", "ttl": "10s"}]))
            writing = asyncio.ensure_future(registry.register("svc", "b", spec()))
            await asyncio.sleep(0.05)  # b's commit is now on its slow way
            began = time.monotonic()
            beat = registry.heartbeat("svc", "a", Heartbeat(metrics={"queue_depth": 3.0}))
            assert time.monotonic() - began < 0.05 and not writing.done()
            assert beat.view.metrics == {"queue_depth": 3.0}
            assert registry.topic_index("service/svc") == registry.index  # watchers see it now
            published = await writing
            assert published.view.id == "b" and registry.index > beat.view.index
        finally:
            await core.stop()

    run(scenario())


def test_changes_written_by_another_server_are_applied_from_the_feed(tmp_path: Path) -> None:
    """With a shared store, another server's write reaches this one only through the feed."""

    async def scenario() -> None:
        core = await started(tmp_path)
        try:
            record = InstanceRecord(spec=spec(service="svc", id="remote"), registered_at=1.0)
            result = await core.store.txn([], [Put("instances/svc/remote", msgspec.json.encode(record))])
            for _ in range(100):
                if core.registry.instances("svc"):
                    break
                await asyncio.sleep(0.01)
            (found,) = core.registry.instances("svc")
            assert found.view.id == "remote" and found.view.registered_at == 1.0
            assert core.registry.index >= result.revision
        finally:
            await core.stop()

    run(scenario())


def test_registering_an_unchanged_instance_keeps_its_check_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        registry = core.registry
        try:
            checks = [{"type": "ttl", "ttl": "10s"}]
            await registry.register("svc", "a", spec(checks=checks))
            registry.heartbeat("svc", "a", Heartbeat(status="warning", output="hot"))
            again = await registry.register("svc", "a", spec(checks=checks, tags=["new"]))
            assert again.view.status == "warning" and again.view.check_states[0].output == "hot"
            changed = await registry.register("svc", "a", spec(checks=[{"type": "ttl", "ttl": "20s"}]))
            assert changed.view.status == "passing"  # new checks start afresh
        finally:
            await core.stop()

    run(scenario())


def test_writes_on_what_is_gone_are_404_and_write_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        registry = core.registry
        try:
            before = (await core.store.snapshot()).revision
            with pytest.raises(NotFound):
                await registry.set_maintenance("svc", "nosuch", True, "x")
            with pytest.raises(NotFound):
                await registry.deregister("svc", "nosuch")
            with pytest.raises(NotFound):
                await registry.delete_node("nosuch")
            assert (await core.store.snapshot()).revision == before
        finally:
            await core.stop()

    run(scenario())


def test_stop_leaves_no_timer_or_task_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        registry = core.registry
        await registry.register("svc", "a", spec())
        await registry.register("svc", "b", spec())
        failures = [Report(service="svc", id="a", ok=False) for _ in range(10)]
        registry.report(failures, "gateway", trusted=True)  # ejects a for a while
        assert registry.instance("svc", "a").view.ejected is not None
        await core.stop()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []
        assert all(timer.cancelled() for timer in registry._timers.values())

    asyncio.run(scenario())  # no wait_for around it: its own task would count as left behind


# --- the lookup ----------------------------------------------------------------------------


def test_one_lookup_answers_every_kind_of_query(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        lookup = core.lookup
        try:
            await core.registry.register("svc", "big", spec(capabilities={"gpu": {"memory_gb": 80}}, tags=["v"]))
            await core.registry.register("svc", "small", spec(capabilities={"gpu": {"memory_gb": 24}}))
            selector = "instance.capabilities.gpu.memory_gb >= 80"
            found = lookup.answer(Query("instances", service="svc", selector=selector))
            assert [p.view.id for p in found.items] == ["big"]  # type: ignore[union-attr]
            assert found.index == core.registry.topic_index("service/svc")
            assert [p.view.id for p in lookup.answer(Query("instances", service="svc", tags=("v",))).items] == [  # type: ignore[union-attr]
                "big"
            ]
            catalog = lookup.answer(Query("catalog")).items
            assert [(s.name, s.instances) for s in catalog] == [("svc", 2)]  # type: ignore[union-attr]
            with pytest.raises(BadRequest, match="selector"):
                lookup.check(Query("instances", service="svc", selector="instance.port >"))
            with pytest.raises(NotFound):
                lookup.answer(Query("instance", service="svc", id="nosuch"))
            assert Query("nodes").topic == "nodes" and Query("instance", service="s", id="i").topic == "service/s"
        finally:
            await core.stop()

    run(scenario())


# --- the answer cache ------------------------------------------------------------------------


class Encoded(msgspec.Struct):
    topic: str
    index: int
    body: bytes


def test_the_answer_cache_is_bounded_in_entries_and_bytes_and_goes_stale() -> None:
    topics = {"t": 1}
    cache: AnswerCache[Encoded] = AnswerCache(lambda topic: topics.get(topic, 0), max_entries=3, max_bytes=100)
    for i in range(5):
        cache.put(i, Encoded("t", 1, b"x" * 10))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) is not None
    cache.put("big", Encoded("t", 1, b"x" * 90))
    assert cache.bytes <= 100 and cache.get("big") is not None
    topics["t"] = 2
    assert cache.get("big") is None  # the topic moved: the answer is stale


def test_junk_query_parameters_share_one_cached_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        front = create_front()
        front.attach(core)
        try:
            await core.registry.register("svc", "a", spec())
            bodies = set()
            for i in range(200):
                status, body = await get(front, "/v1/services/svc", f"junk{i}=x&all=false")
                assert status == 200
                bodies.add(body)
            assert len(bodies) == 1
            assert front.context is not None and len(front.context.cache.answers) == 1
            no_headers = lambda name: None  # noqa: E731
            # the fast path knows it
            assert front.cached("/v1/services/svc", "junk7=x&all=false", no_headers) is not None
        finally:
            front.detach()
            await core.stop()

    run(scenario())


async def get(app: Any, path: str, query: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


# --- what goes wrong: found by review, each reproduced first -----------------------------------


class CompactOnce(SqliteStore):
    """A feed that, once, says the revision its follower needs is gone (as etcd's may)."""

    compact_next = False

    def watch(self, from_revision: int) -> Any:
        inner = super().watch(from_revision)

        async def batches() -> Any:
            async for batch in inner:
                if self.compact_next:
                    self.compact_next = False
                    raise Compacted("the follower fell behind")
                yield batch

        return batches()


def test_a_write_applied_through_a_reload_still_answers_what_it_made(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = CompactOnce(str(tmp_path))
        core = await started(tmp_path, store)
        try:
            store.compact_next = True
            published = await core.registry.register("svc", "a", spec(port=8123))
            assert published.view.port == 8123 and core.registry._local == {}
        finally:
            await core.stop()

    run(scenario())


def test_a_stored_value_this_version_cannot_read_stops_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        registry = core.registry
        try:
            await core.store.txn([], [Put("instances/svc/bad", b'{"not": "a record"}')])
            published = await asyncio.wait_for(registry.register("svc", "ok", spec()), 5)  # the feed goes on
            assert published.view.id == "ok" and [p.view.id for p in registry.instances("svc")] == ["ok"]
            replaced = await asyncio.wait_for(registry.register("svc", "bad", spec(port=9)), 5)  # written over
            assert replaced.view.port == 9
        finally:
            await core.stop()

    run(scenario())


def test_a_record_stored_before_a_stricter_schema_does_not_stop_the_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(str(tmp_path))
        await store.open()
        old = {"spec": {"service": "svc", "id": "old", "address": "my host", "port": 80}, "registered_at": 1.0}
        await store.txn([], [Put("instances/svc/old", msgspec.json.encode(old))])
        await store.close()
        core = await started(tmp_path)
        try:
            assert core.registry.instances("svc", include_all=True) == []
            await asyncio.wait_for(core.registry.deregister("svc", "old"), 5)  # still removable
            assert (await core.store.snapshot()).items[0].key == "meta/index"
        finally:
            await core.stop()

    run(scenario())


def test_deregistering_a_critical_instance_spares_its_reregistration(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        registry = core.registry
        try:
            await registry.register("svc", "a", spec(checks=[{"type": "ttl", "ttl": "10s"}]))
            coming_back = asyncio.ensure_future(registry.register("svc", "a", spec(port=9000)))
            registry._critical_too_long(("instance", "svc", "a"))  # its timer fires as the owner returns
            assert (await coming_back).view.port == 9000
            await asyncio.gather(*registry._background)
            assert [p.view.port for p in registry.instances("svc", include_all=True)] == [9000]
        finally:
            await core.stop()

    run(scenario())


def test_after_a_restart_no_watch_resumes_from_before_it_and_indexes_go_on_above(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = await started(tmp_path)
        await core.registry.register("svc", "a", spec(checks=[{"type": "ttl", "ttl": "10s"}]))
        for _ in range(20):  # live changes move the index past the store's revision
            core.registry.heartbeat("svc", "a", Heartbeat())
        await core.registry.register("svc", "b", spec())
        seen = core.registry.index
        await core.stop()
        core = await started(tmp_path)
        try:
            assert core.registry.index >= seen - 1  # what was handed out up to the last durable write
            assert core.registry.history_since(seen - 5) is None  # a fresh snapshot, never a partial replay
            assert core.registry.topic_index("service/svc") == core.registry.index
        finally:
            await core.stop()

    run(scenario())


def test_snapshots_do_not_wait_for_writes_to_pause(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(str(tmp_path))
        await store.open()
        writing = True

        async def writer(n: int) -> None:
            while writing:
                await store.txn([], [Put(f"k{n}", b"v")])

        writers = [asyncio.ensure_future(writer(n)) for n in range(4)]
        await asyncio.sleep(0.1)
        began = time.monotonic()
        snapshot = await store.snapshot()
        took = time.monotonic() - began
        writing = False
        await asyncio.gather(*writers)
        await store.close()
        assert took < 0.5 and len(snapshot.items) == 4

    run(scenario())
