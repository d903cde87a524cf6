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

import msgspec

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
# sqlite3 binds an int, a float or a str as it is, but for bytes it searches an adaptation protocol
# on every row (a tuple built, a dict lookup, two attribute searches): with bytes' own adapter
# registered, one lookup finds it. The value is bound as the same blob either way.
sqlite3.register_adapter(bytes, bytes)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
"""
_PUT = "INSERT OR REPLACE INTO kv (key, value, revision, lease) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM kv WHERE key = ?"


class _Txn(msgspec.Struct):
    future: asyncio.Future[TxnResult]
    compares: Sequence[Compare] = ()
    ops: Sequence[Op] = ()
    grant: tuple[int, float] | None = None
    revoke: int | None = None
    result: TxnResult | StoreError | None = None  # once judged


class _Batch:
    """One group commit being assembled: rows to write, events to publish, and how to undo it."""

    __slots__ = ("deletes", "events", "granted", "lease_moves", "lease_rows", "revoked", "undo", "undo_leases")

    def __init__(self) -> None:
        self.events: list[StoreEvent] = []  # also the rows of `kv` to write, in order
        self.deletes = False  # whether any event is a deletion
        self.lease_rows: list[tuple[str, tuple[Any, ...]]] = []  # (statement, parameters), in order
        self.undo: dict[str, int | None] = {}  # key -> its mod revision before the batch
        self.undo_leases: dict[str, int] = {}  # key -> its lease before the batch (0: none)
        self.lease_moves: list[tuple[str, int, int]] = []  # key, old lease, new lease (0: none)
        self.granted: dict[int, float] = {}
        self.revoked: list[int] = []


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
        # The loop it serves, from open() on: asyncio.get_running_loop() makes a getpid() system
        # call each time (to notice a fork), which every write would pay.
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- opening and closing ------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(os.path.join(self.data_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
                raise StoreError(f"data directory {self.data_dir}: it is a file, not a directory") from None
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
        self._loop = asyncio.get_running_loop()
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
            self._mods[kv.key] = kv.mod_revision
            if kv.lease:
                self._leased[kv.key] = kv.lease
                if self._leases.exists(kv.lease):
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

    def txn(
        self,
        compares: Sequence[Compare] = (),
        ops: Sequence[Op] = (),
        *,
        grant: tuple[int, float] | None = None,
        revoke: int | None = None,
    ) -> asyncio.Future[TxnResult]:
        """The protocol's transaction; this store's leases are granted and revoked by one as well,
        so that they share a commit (and its order) with the writes around them."""
        if self._closing:
            raise StoreError("the store is closing; nothing was written")
        loop = self._loop
        assert loop is not None, "open() first"
        future: asyncio.Future[TxnResult] = loop.create_future()
        self._pending.append(_Txn(future, compares, ops, grant, revoke))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return future

    def watch(self, from_revision: int) -> AsyncIterator[WatchBatch]:
        return self._feed.watch(from_revision)

    async def grant(self, ttl: float) -> int:
        lease = self._leases.new_id()
        await self.txn(grant=(lease, ttl))
        return lease

    async def keep_alive(self, lease: int) -> float:
        # Nothing to store: a restart renews every lease anyway.
        return self._leases.renew(lease)

    async def revoke(self, lease: int) -> None:
        await self.txn(revoke=lease)

    async def pass_revisions(self, count: int) -> int:
        # Nobody else writes here: this server's indexes never have others' revisions to meet.
        return self._revision

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

    async def _flush(self) -> None:
        try:
            while self._pending:
                txns, self._pending = self._pending, []
                batch = _Batch()
                revision = self._revision
                for txn in txns:
                    revision = self._judge(txn, batch, revision)
                try:
                    if batch.events or batch.lease_rows:
                        COMMIT_BATCH.observe(len(txns))
                        await self._persist(batch, revision)
                except Exception as exc:
                    self._undo(batch)
                    error = StoreError(f"store commit failed: {exc}")
                    for txn in txns:
                        if not txn.future.done():
                            txn.future.set_exception(error)
                    continue
                self._committed(txns, batch, revision)
        finally:
            self._flushing = None

    def _judge(self, txn: _Txn, batch: _Batch, revision: int) -> int:
        """Add `txn` to the batch if its comparisons hold; the store's revision after it.

        This runs for every write: lease bookkeeping is left to `_relet`, for the keys that have one.
        """
        mods = self._mods
        for compare in txn.compares:
            if mods.get(compare.key, 0) != compare.mod_revision:
                txn.result = TxnResult(False, revision)
                return revision
        ops = txn.ops
        for op in ops:
            if type(op) is Put and op.lease and not self._granted(op.lease, batch):
                txn.result = LeaseNotFound(f"lease {op.lease} is not granted")
                return revision
        if txn.grant is not None or txn.revoke is not None:
            with_leases = self._lease_ops(txn, batch)
            if with_leases is None:
                return revision
            ops = with_leases
        after = revision + 1  # every change of one transaction takes one revision
        changed = False
        leased, undo, events = self._leased, batch.undo, batch.events
        for op in ops:
            key = op.key
            old = mods.get(key)
            if type(op) is Put:
                lease = op.lease
                mods[key] = after
                events.append(StoreEvent(key, op.value, after, lease))
            elif old is not None:
                lease = 0
                del mods[key]
                events.append(StoreEvent(key, None, after))
                batch.deletes = True
            else:
                continue  # deleting what is not there changes nothing
            changed = True
            if key not in undo:
                undo[key] = old
            if lease or key in leased:
                self._relet(key, lease, batch)
        if not changed:
            after = revision
        txn.result = TxnResult(True, after)
        return after

    def _lease_ops(self, txn: _Txn, batch: _Batch) -> Sequence[Op] | None:
        """Grant or revoke `txn`'s lease in the batch; the operations it comes to (a revoke deletes
        the lease's keys), or None when it cannot (its result says why)."""
        if txn.grant is not None:
            lease, ttl = txn.grant
            batch.granted[lease] = ttl
            batch.lease_rows.append(("INSERT INTO leases (id, ttl) VALUES (?, ?)", (lease, ttl)))
        if txn.revoke is None:
            return txn.ops
        if not self._granted(txn.revoke, batch):
            txn.result = LeaseNotFound(f"lease {txn.revoke} is not granted")
            return None
        batch.revoked.append(txn.revoke)
        batch.lease_rows.append(("DELETE FROM leases WHERE id = ?", (txn.revoke,)))
        # The keys that hold the lease as of this point of the batch: committed ones not put again
        # without it, and those put with it earlier in the batch.
        held = self._leases.keys(txn.revoke) | batch.undo.keys()
        return [*txn.ops, *(Delete(key) for key in sorted(held) if self._leased.get(key) == txn.revoke)]

    def _relet(self, key: str, lease: int, batch: _Batch) -> None:
        """`key` holds `lease` now (0: none)."""
        old = self._leased.get(key, 0)
        if old == lease:
            return
        batch.undo_leases.setdefault(key, old)
        if lease:
            self._leased[key] = lease
        else:
            del self._leased[key]
        batch.lease_moves.append((key, old, lease))

    def _granted(self, lease: int, batch: _Batch) -> bool:
        """Whether `lease` exists at this point of the batch."""
        return (self._leases.exists(lease) or lease in batch.granted) and lease not in batch.revoked

    def _undo(self, batch: _Batch) -> None:
        """Take back what judging the batch changed: it was not committed."""
        for key, revision in batch.undo.items():
            if revision is None:
                del self._mods[key]
            else:
                self._mods[key] = revision
        for key, lease in batch.undo_leases.items():
            if lease:
                self._leased[key] = lease
            else:
                self._leased.pop(key, None)

    async def _persist(self, batch: _Batch, revision: int) -> None:
        assert self._db is not None, "open() first"
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement, params in batch.lease_rows:
                db.execute(statement, params)
            if not batch.deletes:  # an event's fields are a row's columns: no Python runs per row
                db.executemany(_PUT, map(msgspec.structs.astuple, batch.events))
            else:  # runs of puts and of deletes, in order: a key put then deleted in one batch ends deleted
                for deleting, run in groupby(batch.events, key=_is_delete):
                    if deleting:
                        db.executemany(_DELETE, [(event.key,) for event in run])
                    else:
                        db.executemany(_PUT, map(msgspec.structs.astuple, run))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,))
            await self._in_thread(lambda: db.execute("COMMIT"))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # the commit's own error is the one to report
                db.execute("ROLLBACK")
            raise

    def _committed(self, txns: list[_Txn], batch: _Batch, revision: int) -> None:
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
        for txn in txns:
            future, result = txn.future, txn.result
            if future.done():
                continue
            if isinstance(result, TxnResult):
                future.set_result(result)
            elif result is not None:
                future.set_exception(result)

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
        assert self._loop is not None, "open() first"
        done = self._loop.create_future()
        self._work.put((run, done))
        return done


def _is_delete(event: StoreEvent) -> bool:
    return event.value is None


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
