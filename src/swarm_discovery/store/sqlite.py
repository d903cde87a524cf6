"""The embedded store: one SQLite file in WAL mode, behind the etcd-shaped `Store` protocol.

Every transaction submitted in one event-loop turn shares one SQLite commit (group commit), and
each still takes its own revision, in submission order, with its comparisons judged against the
transactions before it. synchronous=FULL makes a commit durable against power loss, not only
against `kill -9`, and the fsync's cost is shared by the whole batch. The rows are written on
the event loop (handing each statement to a thread cost more in GIL hand-offs than it saved);
only the COMMIT, which waits on the fsync with the GIL released, runs in the store's thread, so
the loop goes on serving and what arrives meanwhile forms the next, larger batch. The thread
takes its work from a plain queue: a ThreadPoolExecutor's futures and locks cost twice the CPU.

The data directory is locked for the process that opened it: two servers on one file would
each believe their own memory and diverge.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from itertools import groupby
from typing import Any

from ..errors import StoreError
from ..telemetry import COMMIT_BATCH
from .feed import Feed
from .leases import Leases
from .protocol import (
    Compare,
    Delete,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    Snapshot,
    StoreEvent,
    TxnResult,
    WatchBatch,
)

log = logging.getLogger("swarm.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
"""
_PUT = "INSERT OR REPLACE INTO kv (key, value, revision, lease) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM kv WHERE key = ?"


class _Txn:
    __slots__ = ("compares", "future", "grant", "ops", "revoke")

    def __init__(
        self,
        future: asyncio.Future[TxnResult],
        compares: Sequence[Compare] = (),
        ops: Sequence[Op] = (),
        grant: tuple[int, float] | None = None,
        revoke: int | None = None,
    ) -> None:
        self.future = future
        self.compares = compares
        self.ops = ops
        self.grant = grant
        self.revoke = revoke


class _Batch:
    """One group commit being assembled: rows to write, events to publish, and how to undo it."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, tuple[Any, ...]]] = []
        self.events: list[StoreEvent] = []
        self.undo: dict[str, tuple[int, int] | None] = {}
        self.lease_moves: list[tuple[str, int, int]] = []  # key, old lease, new lease (0: none)
        self.granted: dict[int, float] = {}
        self.revoked: list[int] = []
        self.results: list[tuple[_Txn, TxnResult | Exception]] = []


class SqliteStore:
    name = "sqlite"
    shared = False

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "registry.db")
        self.location: str | None = self.path
        self._db: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._work: queue.SimpleQueue[tuple[Callable[[], object], asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-commit", daemon=True)
        # key -> mod revision, and the lease of the keys that have one: a (revision, lease) pair
        # per key would cost a tuple for each of 100,000 keys, nearly all of them without a lease.
        self._mods: dict[str, int] = {}
        self._leased: dict[str, int] = {}
        self._revision = 0
        self._pending: list[_Txn] = []
        self._flushing: asyncio.Task[None] | None = None
        self._feed = Feed(0)
        self._leases = Leases(self._lease_expired)
        self._expiring: set[asyncio.Task[None]] = set()
        self._closing = False

    # --- opening and closing ------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(os.path.join(self.data_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"data directory {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(f"data directory {self.data_dir} is in use by process {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_file = fd

    async def open(self) -> Snapshot:
        self._lock()
        try:
            # One connection, used by one batch at a time: rows from the loop, then COMMIT from the thread.
            db = self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            if "lease" not in {row[1] for row in db.execute("PRAGMA table_info(kv)")}:
                db.execute("ALTER TABLE kv ADD COLUMN lease INTEGER NOT NULL DEFAULT 0")
            items = self._items(db)
            row = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            leases = db.execute("SELECT id, ttl FROM leases").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self._revision = max([row[0] if row else 0, *(kv.mod_revision for kv in items)])
        self._feed = Feed(self._revision)
        for lease, ttl in leases:
            self._leases.add(lease, ttl)
        for kv in items:
            self._set_mod(kv.key, (kv.mod_revision, kv.lease))
            if kv.lease and self._leases.exists(kv.lease):
                self._leases.attach(kv.key, kv.lease)
        self._leases.renew_all()
        self._thread.start()
        return Snapshot(items=items, revision=self._revision)

    @staticmethod
    def _items(db: sqlite3.Connection) -> list[KeyValue]:
        rows = db.execute("SELECT key, value, revision, lease FROM kv ORDER BY key")
        return [KeyValue(k, bytes(v), r, lease) for k, v, r, lease in rows]

    async def snapshot(self) -> Snapshot:
        # A connection of its own sees only what is committed, never a batch half written by the
        # writing one, and needs no pause in the writes to do so.
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            items = self._items(reader)
            row = reader.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from None
        finally:
            reader.close()
        return Snapshot(items=items, revision=max([row[0] if row else 0, *(kv.mod_revision for kv in items)]))

    async def close(self) -> None:
        self._closing = True
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        for task in list(self._expiring):
            task.cancel()
        await asyncio.gather(*self._expiring, return_exceptions=True)
        self._leases.close()
        self._feed.close()
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join()
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    # --- the protocol -------------------------------------------------------------------------

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> asyncio.Future[TxnResult]:
        return self._submit(compares=compares, ops=ops)

    def watch(self, from_revision: int) -> AsyncIterator[WatchBatch]:
        return self._feed.watch(from_revision)

    async def grant(self, ttl: float) -> int:
        lease = self._leases.new_id()
        await self._submit(grant=(lease, ttl))
        return lease

    async def keep_alive(self, lease: int) -> float:
        # Nothing to store: a restart renews every lease anyway.
        return self._leases.renew(lease)

    async def revoke(self, lease: int) -> None:
        await self._submit(revoke=lease)

    def _lease_expired(self, lease: int) -> None:
        task = asyncio.get_running_loop().create_task(self._expire(lease))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, lease: int) -> None:
        try:
            await self.revoke(lease)
        except LeaseNotFound:
            pass
        except StoreError:  # the store is failing: try again, the keys must not outlive their lease
            log.exception("expiring lease %d failed; trying again", lease)
            asyncio.get_running_loop().call_later(1.0, self._lease_expired, lease)

    # --- group commit -------------------------------------------------------------------------

    def _submit(self, **txn: Any) -> asyncio.Future[TxnResult]:
        if self._closing:
            raise StoreError("the store is closing; nothing was written")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TxnResult] = loop.create_future()
        self._pending.append(_Txn(future, **txn))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                txns, self._pending = self._pending, []
                batch = _Batch()
                revision = self._revision
                for txn in txns:
                    revision = self._judge(txn, batch, revision)
                try:
                    if batch.rows or batch.granted or batch.revoked:
                        COMMIT_BATCH.observe(len(txns))
                        await self._persist(batch, revision)
                except Exception as exc:
                    for key, old in batch.undo.items():
                        self._set_mod(key, old)
                    error = StoreError(f"store commit failed: {exc}")
                    for txn in txns:
                        if not txn.future.done():
                            txn.future.set_exception(error)
                    continue
                self._committed(batch, revision)
        finally:
            self._flushing = None

    def _judge(self, txn: _Txn, batch: _Batch, revision: int) -> int:
        """Add `txn` to the batch if its comparisons hold; the store's revision after it."""
        if any(self._mods.get(c.key, 0) != c.mod_revision for c in txn.compares):
            batch.results.append((txn, TxnResult(False, revision)))
            return revision
        for op in txn.ops:
            if isinstance(op, Put) and op.lease and not self._granted(op.lease, batch):
                batch.results.append((txn, LeaseNotFound(f"lease {op.lease} is not granted")))
                return revision
        if txn.grant is not None:
            lease, ttl = txn.grant
            batch.granted[lease] = ttl
            batch.rows.append(("INSERT INTO leases (id, ttl) VALUES (?, ?)", (lease, ttl)))
        ops = list(txn.ops)
        if txn.revoke is not None:
            if not self._granted(txn.revoke, batch):
                batch.results.append((txn, LeaseNotFound(f"lease {txn.revoke} is not granted")))
                return revision
            batch.revoked.append(txn.revoke)
            batch.rows.append(("DELETE FROM leases WHERE id = ?", (txn.revoke,)))
            # The keys that hold the lease as of this point of the batch: committed ones not put
            # again without it, and those put with it earlier in the batch.
            held = self._leases.keys(txn.revoke) | batch.undo.keys()
            ops += [Delete(key) for key in sorted(held) if self._leased.get(key) == txn.revoke]
        changes = [op for op in ops if isinstance(op, Put) or op.key in self._mods]
        if changes:
            revision += 1
        for op in changes:
            if op.key not in batch.undo:
                batch.undo[op.key] = self._mod(op.key)
            old_lease = self._leased.get(op.key, 0)
            if isinstance(op, Put):
                self._set_mod(op.key, (revision, op.lease))
                batch.rows.append((_PUT, (op.key, op.value, revision, op.lease)))
                batch.events.append(StoreEvent(op.key, op.value, revision, op.lease))
                new_lease = op.lease
            else:
                self._set_mod(op.key, None)
                batch.rows.append((_DELETE, (op.key,)))
                batch.events.append(StoreEvent(op.key, None, revision))
                new_lease = 0
            if old_lease != new_lease:
                batch.lease_moves.append((op.key, old_lease, new_lease))
        batch.results.append((txn, TxnResult(True, revision)))
        return revision

    def _granted(self, lease: int, batch: _Batch) -> bool:
        """Whether `lease` exists at this point of the batch."""
        return (self._leases.exists(lease) or lease in batch.granted) and lease not in batch.revoked

    def _mod(self, key: str) -> tuple[int, int] | None:
        """The key's (mod revision, lease), None when it does not exist."""
        revision = self._mods.get(key)
        return None if revision is None else (revision, self._leased.get(key, 0))

    def _set_mod(self, key: str, mod: tuple[int, int] | None) -> None:
        if mod is None:
            self._mods.pop(key, None)
            self._leased.pop(key, None)
            return
        self._mods[key] = mod[0]
        if mod[1]:
            self._leased[key] = mod[1]
        else:
            self._leased.pop(key, None)

    async def _persist(self, batch: _Batch, revision: int) -> None:
        assert self._db is not None, "open() first"
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Runs of one statement, in order: a key put then deleted in one batch ends deleted.
            for statement, run in groupby(batch.rows, key=lambda row: row[0]):
                db.executemany(statement, [params for _, params in run])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,))
            await self._in_thread(lambda: db.execute("COMMIT"))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # the commit's own error is the one to report
                db.execute("ROLLBACK")
            raise

    def _committed(self, batch: _Batch, revision: int) -> None:
        self._revision = revision
        for lease, ttl in batch.granted.items():
            self._leases.add(lease, ttl)
            self._leases.renew(lease)
        for key, old, new in batch.lease_moves:
            if old:
                self._leases.detach(key, old)
            if new:
                self._leases.attach(key, new)
        for lease in batch.revoked:
            self._leases.remove(lease)
        if batch.events:
            self._feed.publish(WatchBatch(revision, batch.events))
        for txn, result in batch.results:
            if txn.future.done():
                continue
            if isinstance(result, Exception):
                txn.future.set_exception(result)
            else:
                txn.future.set_result(result)

    # --- the commit thread --------------------------------------------------------------------

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            run, done = work
            try:
                run()
            except BaseException as exc:  # handed to the awaiting write, which fails with it
                done.get_loop().call_soon_threadsafe(_settle, done, exc)
            else:
                done.get_loop().call_soon_threadsafe(_settle, done, None)

    def _in_thread(self, run: Callable[[], object]) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self._work.put((run, done))
        return done


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
