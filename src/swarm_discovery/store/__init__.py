"""Durability under the registry.

A store keeps key -> bytes with a revision per change, shaped like etcd so that the etcd store can
sit behind the same protocol: `load` returns everything with the revision it is current at, and
`commit` makes a batch of changes durable in one transaction before returning. The registry never
knows which store it has; batching concurrent writes into one commit is `GroupCommitter`'s job.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Change(msgspec.Struct, frozen=True):
    key: str
    value: bytes | None  # None deletes the key
    revision: int


class Snapshot(msgspec.Struct, frozen=True):
    items: list[tuple[str, bytes]]
    revision: int


class Store(Protocol):
    name: str
    location: str | None

    async def load(self) -> Snapshot: ...

    async def commit(self, changes: list[Change], revision: int) -> None:
        """Make `changes` durable at once; `revision` is the highest index handed out so far."""
        ...

    async def close(self) -> None: ...


def open_store(kind: str, data_dir: str) -> Store:
    if kind == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(data_dir)
    raise ValueError(f"unknown store {kind!r} (known: sqlite)")
