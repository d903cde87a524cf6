"""Durability under the core: the etcd-shaped `Store` protocol (`protocol.py`) and its stores."""

from __future__ import annotations

from .etcd_config import EtcdOptions
from .protocol import (
    Commit,
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
    "Commit",
    "Compacted",
    "Compare",
    "Delete",
    "EtcdOptions",
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


def open_store(url: str, data_dir: str, etcd: EtcdOptions | None = None) -> Store:
    """`sqlite` (one file in `data_dir`) or `etcd://H:P[,H:P...][/prefix]`, with `etcd` (by default
    from SWARM_ETCD_*: see `EtcdOptions`) saying how to reach it; ValueError naming what is wrong."""
    if url == "sqlite":
        return SqliteStore(data_dir)
    if url.startswith("etcd://"):
        from .etcd import EtcdStore
        from .etcd_config import parse_url

        endpoints, prefix = parse_url(url)
        return EtcdStore(endpoints, prefix, etcd or EtcdOptions.from_env())
    raise ValueError(f"unknown store {url!r}: expected sqlite or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")
