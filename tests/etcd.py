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


class Member:
    """One etcd process; `kill()` is kill -9, `start()` brings it back on its ports and data."""

    def __init__(
        self, name: str, data_dir: Path, initial_cluster: str, client_port: int, peer_port: int, cpus: str | None
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.data_dir = data_dir
        self.initial_cluster = initial_cluster
        self.client_port = client_port
        self.peer_port = peer_port
        self.endpoint = f"127.0.0.1:{client_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def start(self) -> None:
        client = f"http://{self.endpoint}"
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

    def status(self) -> dict[str, Any] | None:
        """etcd's own status of this member (through its JSON gateway), None when it does not answer."""
        try:
            answer = httpx.post(f"http://{self.endpoint}/v3/maintenance/status", json={}, timeout=1)
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def revision(self) -> int:
        status = self.status()
        return int(status["header"]["revision"]) if status else 0

    def healthy(self) -> bool:
        try:
            answer = httpx.get(f"http://{self.endpoint}/health", timeout=1)
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and answer.json().get("health") == "true"


class EtcdCluster:
    """`size` members on loopback, started together; `url(prefix)` is what `swarm serve --store` takes.

    `in_memory=False` keeps their data on disk (the benchmarks: etcd fsyncs as in production);
    `cpus` pins them (taskset)."""

    def __init__(self, size: int = 1, in_memory: bool = True, cpus: str | None = None) -> None:
        self.root = _scratch(in_memory)
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            Member(f"m{i}", self.root / f"m{i}", initial, client, peer, cpus) for i, (client, peer) in enumerate(ports)
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
