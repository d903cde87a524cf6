"""Durability under the core, shaped like etcd so that SQLite and etcd sit behind one protocol.

A store keeps key -> bytes. Every committed transaction takes the next *revision*, assigned by
the store at commit; each key remembers the revision that last changed it (`mod_revision`).
`txn` commits its operations only if every comparison holds (a key's mod revision is what the
writer last saw; 0 means absent), which is how writers that race on one key, here or on another
server, never overwrite what they did not see. `watch(from_revision)` streams every committed
change back, in revision order, whoever wrote it: the core applies what it reads from there and
nothing else. Leases expire keys whose owner stops renewing them, as etcd's do.

    Store
    ├── open() -> Snapshot           every key, at one revision (and snapshot() later)
    ├── txn(compares, ops) -> TxnResult
    ├── watch(from_revision)         batches of committed changes; Compacted when too old
    └── grant / keep_alive / revoke  leases
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from ..errors import StoreError


class KeyValue(msgspec.Struct, frozen=True, gc=False):
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


class Snapshot(msgspec.Struct, frozen=True):
    items: list[KeyValue]
    revision: int


class Put(msgspec.Struct, frozen=True, gc=False):
    key: str
    value: bytes
    lease: int = 0  # the key is deleted when this lease ends


class Delete(msgspec.Struct, frozen=True, gc=False):
    key: str


Op = Put | Delete


class Compare(msgspec.Struct, frozen=True, gc=False):
    """Holds when `key`'s mod revision equals `mod_revision` (0: the key does not exist)."""

    key: str
    mod_revision: int


class TxnResult(msgspec.Struct, frozen=True):
    succeeded: bool  # every comparison held and the operations were committed
    revision: int  # the transaction's revision if it succeeded; else the store's when it was judged


# What a follower of the registry writes with (`Registry.commit`): a transaction, answered once
# the registry has applied it.
Commit = Callable[[Sequence[Compare], Sequence[Op]], Awaitable[TxnResult]]


class StoreEvent(msgspec.Struct, frozen=True, gc=False):
    key: str
    value: bytes | None  # None: the key was deleted
    revision: int
    lease: int = 0


class WatchBatch(msgspec.Struct, frozen=True, gc=False):
    """Committed changes in revision order; the store is at `revision` once they are applied."""

    revision: int
    events: list[StoreEvent]


class Compacted(StoreError):
    """The revision a watch asked for is no longer held: load a fresh snapshot instead."""


class LeaseNotFound(StoreError):
    """The lease expired or was revoked."""

    status_code = 404


class Store(Protocol):
    name: str
    location: str | None
    # Whether other servers write to it too (etcd): then its revisions, not one server's own
    # counting, are what every server's change index follows.
    shared: bool

    async def open(self) -> Snapshot:
        """Open the store and read everything in it."""
        ...

    async def snapshot(self) -> Snapshot:
        """Everything in the store now, at one revision (after a watch was compacted)."""
        ...

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> Awaitable[TxnResult]:
        """Commit `ops` durably, in one revision, if every comparison holds."""
        ...

    def watch(self, from_revision: int) -> AsyncIterator[WatchBatch]:
        """Every committed change from `from_revision` on; raises `Compacted` if that is too old."""
        ...

    async def grant(self, ttl: float) -> int:
        """A new lease of `ttl` seconds; keys put with it are deleted when it ends."""
        ...

    async def keep_alive(self, lease: int) -> float:
        """Renew a lease for its full TTL, which is returned; `LeaseNotFound` once it ended."""
        ...

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""
        ...

    async def pass_revisions(self, count: int) -> int:
        """Move the revision on by at least `count`, each with no event in any watch: a server
        ahead of a shared store's revisions catches up with them. The revision after."""
        ...

    async def close(self) -> None: ...
