"""The embedded store: one SQLite file in WAL mode.

synchronous=FULL makes each commit durable against power loss, not only against `kill -9`; the
cost of the fsync is shared by every write in a group commit. Commits run on the event loop
itself: a batch costs a fraction of a millisecond on a local disk, and handing it to a thread
cost more in GIL hand-offs than it saved (3,200 against 4,500 registrations/s in bench/writes.py).
On a disk with slow fsyncs, reads pause for as long as one commit takes.
"""

from __future__ import annotations

import os
import sqlite3

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

    async def load(self) -> Snapshot:
        db = self._db = sqlite3.connect(self.location, isolation_level=None)
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

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
