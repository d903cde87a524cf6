"""Durability under the core: the etcd-shaped `Store` protocol (`protocol.py`) and its stores."""

from __future__ import annotations

from .protocol import (
    Compacted,
    Compare,
    Delete,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    Snapshot,
    Store,
    StoreEvent,
    TxnResult,
    WatchBatch,
)
from .sqlite import SqliteStore

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "Put",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreEvent",
    "TxnResult",
    "WatchBatch",
    "open_store",
]


def open_store(kind: str, data_dir: str) -> Store:
    if kind == "sqlite":
        return SqliteStore(data_dir)
    raise ValueError(f"unknown store {kind!r} (known: sqlite)")
