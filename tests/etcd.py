"""Real etcd members on loopback ports, for the tests and the benchmarks (etcd-server from Debian).

Their data lives in memory (/dev/shm where there is one): an fsync there costs nothing, so a
test on two cores waits on etcd's logic, not on the disk. The election timings are shorter than
etcd's defaults (loopback has no latency to allow for), so that a member killed with -9 is
replaced as leader within about a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from swarm_discovery.server import die_with_parent
from tests.server import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
HEARTBEAT_MS = 50
ELECTION_MS = 500


def _scratch(in_memory: bool) -> Path:
    shm = in_memory and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
    return Path(tempfile.mkdtemp(prefix="swarm-etcd-", dir="/dev/shm" if shm else None))


class Tls:
    """A throwaway CA, a certificate for 127.0.0.1 signed by it, and a client certificate (openssl)."""

    def __init__(self, directory: Path) -> None:
        self.ca = directory / "ca.pem"
        self.server_cert, self.server_key = directory / "server.pem", directory / "server.key"
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"

    @classmethod
    def make(cls, directory: Path) -> Tls:
        directory.mkdir(parents=True)
        tls = cls(directory)
        ca_key = directory / "ca.key"

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(tls.ca),
            "-days", "1", "-subj", "/CN=swarm test CA")  # fmt: skip
        for cert, key, name in ((tls.server_cert, tls.server_key, "etcd"), (tls.client_cert, tls.client_key, "swarm")):
            request = directory / f"{name}.csr"
            extensions = directory / f"{name}.ext"
            extensions.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
                "-subj", f"/CN={name}")  # fmt: skip
            run("x509", "-req", "-in", str(request), "-CA", str(tls.ca), "-CAkey", str(ca_key), "-CAcreateserial",
                "-out", str(cert), "-days", "1", "-extfile", str(extensions))  # fmt: skip
        return tls


class Member:
    """One etcd process; `kill()` is kill -9, `start()` brings it back on its ports and data."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        initial_cluster: str,
        client_port: int,
        peer_port: int,
        cpus: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.tls = tls
        self.data_dir = data_dir
        self.initial_cluster = initial_cluster
        self.client_port = client_port
        self.peer_port = peer_port
        self.endpoint = f"127.0.0.1:{client_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def start(self) -> None:
        client = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        secured = (
            [
                "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth",
            ]
            if self.tls is not None
            else []
        )  # fmt: skip
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        pinned = ["taskset", "-c", self.cpus] if self.cpus is not None else []
        self.process = subprocess.Popen(
            [
                *pinned,
                ETCD,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                self.initial_cluster,
                "--initial-cluster-state",
                "existing" if self._started_once else "new",
                "--initial-cluster-token",
                f"swarm-test-{self.data_dir.parent.name}",
                "--heartbeat-interval",
                str(HEARTBEAT_MS),
                "--election-timeout",
                str(ELECTION_MS),
                "--logger",
                "zap",
                "--log-level",
                "error",
                *secured,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no etcd outlives a test run killed half-way
        )
        self._started_once = True

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def _http(self) -> httpx.Client:
        if self.tls is None:
            return httpx.Client(base_url=f"http://{self.endpoint}", timeout=1)
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return httpx.Client(base_url=f"https://{self.endpoint}", timeout=1, verify=context)

    def status(self) -> dict[str, Any] | None:
        """etcd's own status of this member (through its JSON gateway), None when it does not answer."""
        try:
            with self._http() as http:
                answer = http.post("/v3/maintenance/status", json={})
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def revision(self) -> int:
        status = self.status()
        return int(status["header"]["revision"]) if status else 0

    def healthy(self) -> bool:
        try:
            with self._http() as http:
                answer = http.get("/health")
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and answer.json().get("health") == "true"


class EtcdCluster:
    """`size` members on loopback, started together; `url(prefix)` is what `swarm serve --store` takes.

    `in_memory=False` keeps their data on disk (the benchmarks: etcd fsyncs as in production);
    `cpus` pins them (taskset)."""

    def __init__(self, size: int = 1, in_memory: bool = True, cpus: str | None = None, tls: bool = False) -> None:
        self.root = _scratch(in_memory)
        self.tls = Tls.make(self.root / "tls") if tls else None
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            Member(f"m{i}", self.root / f"m{i}", initial, client, peer, cpus, self.tls)
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def url(self, prefix: str = "") -> str:
        return "etcd://" + ",".join(self.endpoints) + (f"/{prefix}" if prefix else "")

    def start(self) -> None:
        for member in self.members:
            member.start()
        self.wait_healthy()

    def leader(self) -> Member:
        for member in self.members:
            status = member.status()
            if status is not None and status["leader"] == status["header"]["member_id"]:
                return member
        raise RuntimeError("no member leads")

    def wait_healthy(self, seconds: float = 30.0) -> None:
        """Until every running member says it is healthy (it has a leader and serves)."""
        deadline = time.monotonic() + seconds
        running = [m for m in self.members if m.process is not None and m.process.poll() is None]
        while not all(m.healthy() for m in running):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy; see the logs in {self.root}")
            time.sleep(0.05)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.root, ignore_errors=True)
