"""The embedded store: one SQLite file in WAL mode.

synchronous=FULL makes each commit durable against power loss, not only against `kill -9`; the
cost of the fsync is shared by every write in a group commit. The rows of a batch are written on
the event loop (handing each statement to a thread cost more in GIL hand-offs than it saved), and
only the COMMIT, which waits on the fsync with the GIL released, runs in the store's thread: the
loop goes on serving, and the writes that arrive meanwhile form the next, larger batch. The thread
takes its work from a plain queue: a ThreadPoolExecutor's futures and locks cost twice the CPU
per commit on one core.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from itertools import groupby

from . import Change, Snapshot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SqliteStore:
    name = "sqlite"

    def __init__(self, data_dir: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.location = os.path.join(data_dir, "registry.db")
        self._db: sqlite3.Connection | None = None
        self._work: queue.SimpleQueue[tuple[Callable[[], object], asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-commit", daemon=True)

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

    async def load(self) -> Snapshot:
        # One connection, used by one batch at a time: rows from the loop, then COMMIT from the thread.
        db = self._db = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
        self._thread.start()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        items = [(k, bytes(v)) for k, v in db.execute("SELECT key, value FROM kv ORDER BY key")]
        row = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return Snapshot(items=items, revision=row[0] if row else 0)

    async def commit(self, changes: list[Change], revision: int) -> None:
        assert self._db is not None, "load() first"
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Runs of puts and of deletes, in index order: a key put then deleted in one batch ends deleted.
            for deleting, run in groupby(changes, key=lambda c: c.value is None):
                if deleting:
                    db.executemany("DELETE FROM kv WHERE key = ?", [(c.key,) for c in run])
                else:
                    db.executemany(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", [(c.key, c.value, c.revision) for c in run]
                    )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,))
            await self._in_thread(lambda: db.execute("COMMIT"))
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join()  # nothing is left to commit: the registry drained its writes first
        if self._db is not None:
            self._db.close()
            self._db = None


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
