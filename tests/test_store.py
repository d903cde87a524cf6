"""The store conformance suite: what the core relies on from any `Store`, run against each one.

Every test taking `make_store` runs on SQLite (a file in a temporary directory) and on etcd (a
real etcd member on a loopback port, shared by the tests, each under a key prefix of its own).
Nothing is mocked; each test drives its store on a real event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from swarm_discovery.errors import StoreError
from swarm_discovery.store import (
    Compacted,
    Compare,
    Delete,
    LeaseNotFound,
    Put,
    SqliteStore,
    Store,
    StoreEvent,
    WatchBatch,
)
from swarm_discovery.store.etcd import EtcdStore
from swarm_discovery.store.feed import Feed
from tests.etcd import EtcdCluster

Factory = Callable[[Path], Store]


@pytest.fixture(params=["sqlite", "etcd"])
def make_store(request: pytest.FixtureRequest) -> Factory:
    if request.param == "sqlite":
        return lambda path: SqliteStore(str(path))
    cluster: EtcdCluster = request.getfixturevalue("etcd_member")
    return lambda path: EtcdStore(cluster.endpoints, f"/conformance/{path.name}/")


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 30))


@contextlib.asynccontextmanager
async def opened(make_store: Factory, path: Path) -> AsyncIterator[Store]:
    store = make_store(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def next_batch(feed: AsyncIterator[WatchBatch]) -> WatchBatch:
    """The next batch with changes in it; a batch without any only says how far the store is."""
    async with asyncio.timeout(5):
        while not (batch := await anext(feed)).events:
            pass
        return batch


def test_each_transaction_takes_the_next_revision(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            first = await store.txn([], [Put("a", b"1")])
            second = await store.txn([], [Put("b", b"2"), Put("c", b"3")])
            assert first.succeeded and second.succeeded
            assert second.revision == first.revision + 1  # one revision per transaction, however many keys
            snapshot = await store.snapshot()
            assert snapshot.revision == second.revision
            assert [(kv.key, kv.value, kv.mod_revision) for kv in snapshot.items] == [
                ("a", b"1", first.revision),
                ("b", b"2", second.revision),
                ("c", b"3", second.revision),
            ]

    run(scenario())


def test_a_comparison_that_fails_writes_nothing(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            created = await store.txn([Compare("k", 0)], [Put("k", b"v1")])  # 0: the key must not exist
            assert created.succeeded
            again = await store.txn([Compare("k", 0)], [Put("k", b"v2")])
            assert not again.succeeded and again.revision == created.revision
            stale = await store.txn([Compare("k", created.revision - 1)], [Delete("k")])
            assert not stale.succeeded
            updated = await store.txn([Compare("k", created.revision)], [Put("k", b"v3")])
            assert updated.succeeded
            items = (await store.snapshot()).items
            assert [(kv.value, kv.mod_revision) for kv in items] == [(b"v3", updated.revision)]

    run(scenario())


def test_racing_writers_on_one_key_exactly_one_wins(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            base = await store.txn([], [Put("k", b"base")])
            results = await asyncio.gather(
                *(store.txn([Compare("k", base.revision)], [Put("k", f"w{i}".encode())]) for i in range(20))
            )
            winners = [i for i, r in enumerate(results) if r.succeeded]
            assert len(winners) == 1
            items = (await store.snapshot()).items
            assert items[0].value == f"w{winners[0]}".encode()

    run(scenario())


def test_a_burst_of_writers_each_gets_its_own_answer(make_store: Factory, tmp_path: Path) -> None:
    """Transactions that arrive together may be committed as one (etcd's store merges them): each
    caller still learns whether its own held, and a failed comparison in the burst fails only its own."""

    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            base = await store.txn([], [Put("taken", b"x")])
            writes = [
                store.txn([Compare("taken", 0)] if i % 7 == 3 else [], [Put(f"k/{i:03}", b"v")]) for i in range(300)
            ]
            results = await asyncio.gather(*writes)
            held = {f"k/{i:03}" for i, r in enumerate(results) if r.succeeded}
            assert held == {f"k/{i:03}" for i in range(300) if i % 7 != 3}
            assert all(r.revision >= base.revision for r in results)
            keys = {kv.key for kv in (await store.snapshot()).items}
            assert keys == held | {"taken"}

    run(scenario())


def test_watch_streams_every_committed_change_in_order(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            start = (await store.snapshot()).revision
            feed = aiter(store.watch(start + 1))
            put = await store.txn([], [Put("a", b"1")])
            await store.txn([Compare("a", 0)], [Put("a", b"lost")])  # fails: not in the feed
            deleted = await store.txn([], [Delete("a"), Delete("never-there")])
            events: list[StoreEvent] = []
            while len(events) < 2:
                batch = await next_batch(feed)
                assert batch.revision == batch.events[-1].revision
                events.extend(batch.events)
            assert [(e.key, e.value, e.revision) for e in events] == [
                ("a", b"1", put.revision),
                ("a", None, deleted.revision),
            ]

    run(scenario())


def test_etcd_passes_revisions_that_bring_no_event(etcd_member: EtcdCluster, tmp_path: Path) -> None:
    """What a server ahead of etcd's revisions has it do (`Registry._catch_up`): revisions go by
    with nothing in the watch, and the next write comes after all of them."""

    def make(path: Path) -> Store:
        return EtcdStore(etcd_member.endpoints, f"/conformance/{path.name}/")

    async def scenario() -> None:
        async with opened(make, tmp_path) as store:
            start = (await store.snapshot()).revision
            feed = aiter(store.watch(start + 1))
            passed = await store.pass_revisions(10)
            assert passed >= start + 10
            put = await store.txn([], [Put("a", b"1")])
            assert put.revision > passed
            events: list[StoreEvent] = []
            while not events:
                events.extend((await next_batch(feed)).events)
            assert [(e.key, e.revision) for e in events] == [("a", put.revision)]

    run(scenario())


def test_a_watch_resumes_from_a_past_revision_or_says_it_is_compacted(tmp_path: Path) -> None:
    async def scenario() -> None:
        feed = Feed(revision=10, max_batches=3)
        for revision in range(11, 16):
            feed.publish(WatchBatch(revision, [StoreEvent(f"k{revision}", b"v", revision)]))
        resumed = aiter(feed.watch(13))
        assert [(await next_batch(resumed)).revision for _ in range(3)] == [13, 14, 15]
        with pytest.raises(Compacted):
            await next_batch(aiter(feed.watch(12)))
        await resumed.aclose()  # type: ignore[attr-defined]

    run(scenario())


def test_a_watcher_that_falls_behind_is_cut_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        feed = Feed(revision=0, max_batches=4)
        stuck = aiter(feed.watch(1))
        feed.publish(WatchBatch(1, [StoreEvent("k", b"v", 1)]))
        assert (await next_batch(stuck)).revision == 1
        for revision in range(2, 10):  # it reads nothing while these arrive
            feed.publish(WatchBatch(revision, [StoreEvent("k", b"v", revision)]))
        with pytest.raises(Compacted):
            for _ in range(10):
                await next_batch(stuck)

    run(scenario())


def test_everything_committed_is_there_after_reopening(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            await store.txn([], [Put("a", b"1"), Put("b", b"2")])
            last = await store.txn([], [Delete("a")])
        store = make_store(tmp_path)
        snapshot = await store.open()
        try:
            assert snapshot.revision == last.revision
            assert [(kv.key, kv.value) for kv in snapshot.items] == [("b", b"2")]
            after = await store.txn([], [Put("c", b"3")])
            assert after.revision == last.revision + 1  # revisions go on from where they were
        finally:
            await store.close()

    run(scenario())


def test_a_snapshot_of_many_pages_holds_every_key_once(
    make_store: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd's snapshot reads keys in pages of KEYS_PAGE, then records in pages of PAGE between
    them: small pages here, so that every boundary is crossed."""
    monkeypatch.setattr("swarm_discovery.store.etcd.PAGE", 3)
    monkeypatch.setattr("swarm_discovery.store.etcd.KEYS_PAGE", 7)
    expected = {f"k/{i:03}": str(i).encode() for i in range(50)}

    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            await store.txn([], [Put(key, value) for key, value in expected.items()])
            last = await store.txn([], [Delete("k/007")])
            snapshot = await store.snapshot()
        assert snapshot.revision == last.revision
        assert [(kv.key, kv.value) for kv in snapshot.items] == [(k, v) for k, v in expected.items() if k != "k/007"]

    run(scenario())


def test_a_lease_deletes_its_keys_when_it_runs_out(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            feed = aiter(store.watch((await store.snapshot()).revision + 1))
            lease = await store.grant(0.3)  # etcd's are whole seconds, at least 1
            await store.txn([], [Put("live/a", b"x", lease=lease), Put("kept", b"y")])
            assert (await next_batch(feed)).events[0].lease == lease
            ttl = await store.keep_alive(lease)
            assert ttl >= 0.3
            started = time.monotonic()
            while time.monotonic() - started < 2 * ttl:  # renewed: it outlives its TTL
                await asyncio.sleep(ttl / 2)
                assert await store.keep_alive(lease) == ttl
            gone = await next_batch(feed)  # then silence: the key is deleted through the feed
            assert [(e.key, e.value) for e in gone.events] == [("live/a", None)]
            assert [kv.key for kv in (await store.snapshot()).items] == ["kept"]
            with pytest.raises(LeaseNotFound):
                await store.keep_alive(lease)

    run(scenario())


def test_revoking_a_lease_deletes_its_keys_and_unknown_leases_are_refused(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            lease = await store.grant(60)
            await store.txn([], [Put("a", b"1", lease=lease), Put("b", b"2", lease=lease)])
            await store.txn([], [Put("b", b"3")])  # put again without the lease: b no longer depends on it
            await store.revoke(lease)
            assert [(kv.key, kv.value) for kv in (await store.snapshot()).items] == [("b", b"3")]
            with pytest.raises(LeaseNotFound):
                await store.txn([], [Put("c", b"4", lease=lease)])
            with pytest.raises(LeaseNotFound):
                await store.revoke(lease)

    run(scenario())


def test_leases_survive_a_restart_with_their_full_ttl(make_store: Factory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            lease = await store.grant(0.5)
            await store.txn([], [Put("live/a", b"x", lease=lease)])
        async with opened(make_store, tmp_path) as store:
            assert [kv.lease for kv in (await store.snapshot()).items] == [lease]
            assert await store.keep_alive(lease) >= 0.5
            deadline = time.monotonic() + 5
            while (await store.snapshot()).items and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert (await store.snapshot()).items == []

    run(scenario())


def test_a_failed_commit_fails_every_write_in_it_and_changes_nothing(tmp_path: Path) -> None:
    class FailingCommit(SqliteStore):
        fail = False

        def _in_thread(self, work: Callable[[], object]) -> asyncio.Future[None]:
            if self.fail:
                future = asyncio.get_running_loop().create_future()
                future.set_exception(OSError(28, "No space left on device"))
                return future
            return super()._in_thread(work)

    async def scenario() -> None:
        store = FailingCommit(str(tmp_path))
        await store.open()
        try:
            first = await store.txn([], [Put("a", b"1")])
            store.fail = True
            results = await asyncio.gather(
                store.txn([Compare("a", first.revision)], [Put("a", b"2")]),
                store.txn([], [Put("b", b"3")]),
                return_exceptions=True,
            )
            assert all(isinstance(r, StoreError) and "No space left" in str(r) for r in results), results
            store.fail = False
            snapshot = await store.snapshot()
            assert snapshot.revision == first.revision
            assert [(kv.key, kv.value) for kv in snapshot.items] == [("a", b"1")]
            retried = await store.txn([Compare("a", first.revision)], [Put("a", b"2")])  # memory was rolled back
            assert retried.succeeded and retried.revision == first.revision + 1
        finally:
            await store.close()

    run(scenario())


def test_one_process_holds_a_data_directory(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys; from swarm_discovery.store import SqliteStore\n"
            "async def main():\n"
            f"    await SqliteStore({str(tmp_path)!r}).open(); print('open', flush=True); sys.stdin.read()\n"
            "asyncio.run(main())",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"

        async def second() -> None:
            with pytest.raises(StoreError, match=f"in use by process {holder.pid}"):
                await SqliteStore(str(tmp_path)).open()

        run(second())
    finally:
        holder.kill()
        holder.wait()

    async def after() -> None:  # the kernel drops the lock with the process, even after kill -9
        store = SqliteStore(str(tmp_path))
        await store.open()
        await store.close()

    run(after())
    assert os.path.exists(tmp_path / "LOCK")


def test_lease_changes_within_one_batch(tmp_path: Path) -> None:
    """SQLite's group commit judges each transaction of a batch after those before it in the batch
    (etcd has no batches: each transaction is a round trip of its own, in the order etcd gets them)."""

    def make_store(path: Path) -> Store:
        return SqliteStore(str(path))

    async def scenario() -> None:
        async with opened(make_store, tmp_path) as store:
            lease = await store.grant(60)
            revoking = asyncio.ensure_future(store.revoke(lease))  # submitted a turn later, same batch
            await asyncio.gather(store.txn([], [Put("live/a", b"x", lease=lease)]), revoking)
            assert (await store.snapshot()).items == []  # put with the lease, then the lease revoked
            with pytest.raises(LeaseNotFound):
                await store.txn([], [Put("live/b", b"x", lease=lease)])
            other = await store.grant(60)
            await store.txn([], [Put("b", b"1", lease=other)])
            revoking = asyncio.ensure_future(store.revoke(other))
            await asyncio.gather(store.txn([], [Put("b", b"2")]), revoking)  # b leaves the lease first
            assert [(kv.key, kv.value, kv.lease) for kv in (await store.snapshot()).items] == [("b", b"2", 0)]

    run(scenario())


def test_closing_the_feed_hands_over_what_was_published_first() -> None:
    async def scenario() -> None:
        feed = Feed(revision=0)
        watch = aiter(feed.watch(1))
        feed.publish(WatchBatch(1, [StoreEvent("k", b"v", 1)]))
        feed.close()
        assert [batch.revision async for batch in watch] == [1]

    run(scenario())
