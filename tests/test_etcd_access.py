"""Reaching a guarded etcd: TLS with a client certificate (through `swarm serve`'s options), and a user."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_discovery.errors import StoreError
from swarm_discovery.store import EtcdOptions, Put
from swarm_discovery.store.etcd import EtcdStore
from tests.etcd import EtcdCluster
from tests.helpers import ids, put
from tests.server import Server
from tests.test_cli_serve import one_line_error, serve


@pytest.fixture(scope="module")
def tls_member() -> Iterator[EtcdCluster]:
    etcd = EtcdCluster(1, tls=True)
    etcd.start()
    yield etcd
    etcd.stop()


def test_a_server_reaches_etcd_over_tls_with_a_client_certificate(tls_member: EtcdCluster, tmp_path: Path) -> None:
    tls = tls_member.tls
    assert tls is not None
    (tmp_path / "s").mkdir()
    server = Server(
        tmp_path / "s" / "data",
        args=(
            "--store", tls_member.url("tls"),
            "--etcd-ca", str(tls.ca), "--etcd-cert", str(tls.client_cert), "--etcd-key", str(tls.client_key),
        ),
    )  # fmt: skip
    server.start()
    try:
        put(server.http, "secure", "i1")
        assert ids(server.http.get("/v1/services/secure")) == ["i1"]
        assert server.http.get("/v1/server").json()["members"][0]["healthy"]
    finally:
        server.stop()


def test_tls_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    store = ("--store", "etcd://127.0.0.1:2379")
    assert "go together" in one_line_error(serve(*store, "--etcd-cert", str(tmp_path)))
    assert "cannot read" in one_line_error(serve(*store, "--etcd-ca", str(tmp_path / "missing.pem")))
    assert "go with --store etcd" in one_line_error(serve("--etcd-user", "root"))
    assert "HOST:PORT" in one_line_error(serve("--store", "etcd://nowhere"))
    assert "expected etcd://" in one_line_error(serve("--store", "redis://x:1"))


def test_a_user_and_password() -> None:
    """On a member of its own: authentication stays on for good once enabled."""
    etcd = EtcdCluster(1)
    etcd.start()
    try:

        def ctl(*args: str) -> None:
            command = ["etcdctl", "--endpoints", etcd.endpoints[0], *args]
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})

        ctl("user", "add", "root:rootpw")
        ctl("user", "grant-role", "root", "root")
        ctl("auth", "enable")

        async def scenario() -> None:
            store = EtcdStore(etcd.endpoints, "/auth/", EtcdOptions(user="root", password="rootpw"))
            await store.open()
            assert (await store.txn([], [Put("a", b"1")])).succeeded
            await store.close()
            for options, refusal in ((EtcdOptions(user="root", password="wrong"), "invalid user"), (None, "empty")):
                store = EtcdStore(etcd.endpoints, "/auth/", options)
                with pytest.raises(StoreError, match=refusal):
                    await store.open()
                await store.close()

        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        etcd.stop()
