"""`swarm gateway` and the LLM simulator as processes on loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from swarm_discovery.server import die_with_parent
from tests.server import free_port


class GatewayProcess:
    """One `swarm gateway` process following the registry at `registry` (host:port)."""

    def __init__(self, registry: str, log_dir: Path, args: tuple[str, ...] = (), cpus: str | None = None) -> None:
        self.registry = registry
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.log_path = log_dir / f"gateway-{self.port}.log"
        pinned = ["taskset", "-c", cpus] if cpus is not None else []
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*pinned, sys.executable, "-m", "swarm_discovery", "gateway", "--listen", self.addr, *args],
                env={**os.environ, "SWARM_ADDR": registry},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        else:
            raise RuntimeError(f"gateway on {self.addr} did not start; see {self.log_path}")
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def status(self) -> dict:  # type: ignore[type-arg]
        return self.http.get("/-/status").json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("the gateway did not stop within 10 s of SIGTERM") from None


class Simulators:
    """LLM simulators (`tests/llm_sim.py`), one process with an engine per port."""

    def __init__(self, count: int, args: tuple[str, ...] = (), cpus: str | None = None) -> None:
        self.ports = [free_port() for _ in range(count)]
        pinned = ["taskset", "-c", cpus] if cpus is not None else []
        command = [*pinned, sys.executable, "-m", "tests.llm_sim", *args]
        for port in self.ports:
            command += ["--port", str(port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        assert self.process.stdout is not None
        for _ in self.ports:
            line = self.process.stdout.readline()
            if not line.startswith(b"serving"):
                raise RuntimeError(f"the simulator did not start: {line!r}")

    def kill(self) -> None:
        """kill -9, every engine at once."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
