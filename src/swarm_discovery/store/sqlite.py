"""The embedded store: one SQLite file in WAL mode, written from one thread.

synchronous=FULL makes each commit durable against power loss, not only against `kill -9`; the
cost of the fsync is shared by every write in a group commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

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
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> Snapshot:
        db = sqlite3.connect(self.location, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        items = [(k, bytes(v)) for k, v in db.execute("SELECT key, value FROM kv ORDER BY key")]
        row = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return Snapshot(items=items, revision=row[0] if row else 0)

    def _commit(self, changes: list[Change], revision: int) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for c in changes:  # in index order: a key put then deleted in one batch ends deleted
                if c.value is None:
                    db.execute("DELETE FROM kv WHERE key = ?", (c.key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (c.key, c.value, c.revision))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (revision,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def load(self) -> Snapshot:
        return await self._run(self._open)

    async def commit(self, changes: list[Change], revision: int) -> None:
        await self._run(self._commit, changes, revision)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._thread.shutdown(wait=True)
