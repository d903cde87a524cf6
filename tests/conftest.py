"""Real servers on loopback ports: each test talks HTTP to a `swarm serve` process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster
from tests.server import Server

# A lapsed TTL waits this long before it expires (mass-expiry protection); tests keep it short.
FAST_EXPIRY = ("--expiry-window", "50ms", "--ejection-base", "1s")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server with an empty store, for tests that need one to themselves."""
    s = Server(tmp_path / "data", args=FAST_EXPIRY)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module; tests use their own service names so they do not interfere."""
    s = Server(tmp_path_factory.mktemp("shared") / "data", args=FAST_EXPIRY)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def swarm_env(server: Server) -> dict[str, str]:
    return {**os.environ, "SWARM_ADDR": server.addr, "COLUMNS": "200"}


@pytest.fixture(scope="session")
def etcd_member() -> Iterator[EtcdCluster]:
    """One etcd member for the whole run, started when a test first needs it; tests share it
    under key prefixes of their own."""
    cluster = EtcdCluster(1)
    cluster.start()
    yield cluster
    cluster.stop()
