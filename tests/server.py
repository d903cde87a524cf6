"""A `swarm serve` process on a loopback port, for the tests and the benchmarks."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from swarm_discovery.server import die_with_parent


def granian_worker(pid: int) -> int:
    """The worker process granian's main process `pid` runs (its one child)."""
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_dns_port() -> int:
    """A loopback port free for both TCP and UDP, as a DNS server takes."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


STOP_WITHIN = 5.0


class Server:
    """One `swarm serve` process; restartable on the same port and data directory.

    `tls` is what the tests' own requests to it verify it with (and present), for a server given
    `--tls-cert`: its url is then https.
    """

    def __init__(
        self,
        data_dir: Path,
        cpus: str | None = None,
        args: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.cpus = cpus
        self.args = args
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.addr}"
        self.verify: ssl.SSLContext | bool = tls or True
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10, verify=self.verify)

    def start(self) -> None:
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        pinned = ["taskset", "-c", self.cpus] if self.cpus is not None else []  # taskset execs: same pid
        self.process = subprocess.Popen(
            [
                *pinned,
                sys.executable,
                "-m",
                "swarm_discovery",
                "serve",
                "--http",
                self.addr,
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *self.args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no server outlives a test run or benchmark killed half-way
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.02)
        raise RuntimeError(f"server on {self.addr} did not start; see {self.log.name}")

    def kill(self) -> None:
        """kill -9: no shutdown hook runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the worker dies with the main process
            try:
                httpx.get(f"{self.url}/healthz", timeout=0.2, verify=self.verify)
                time.sleep(0.05)
            except httpx.TransportError:
                return
        raise RuntimeError("server still answers after kill -9")

    def stop(self, within: float = STOP_WITHIN) -> None:
        """SIGTERM, as a service manager stops it; a server that does not exit in time fails the test."""
        self.http.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server on {self.addr} did not stop within {within} s of SIGTERM") from None

    def worker_pid(self) -> int:
        """The granian worker, which holds the registry."""
        assert self.process is not None
        return granian_worker(self.process.pid)
