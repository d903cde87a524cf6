"""What every benchmark shares: a pinned server, nginx as the reference, wrk as the load, loading data.

The machine has two cores: the system under test (our server, or nginx) is pinned to core 0 and
the load generator to core 1, so both run at once without stealing from each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from tests.server import Server, free_port

SERVER_CPU = "0"
LOAD_CPU = "1"
# One loader's address stands for a whole fleet: a write rate it never reaches, with the limiter running.
WRITE_RATE = 1e9


def start_server(
    cpus: str | None = SERVER_CPU, args: tuple[str, ...] = (), tls: ssl.SSLContext | None = None
) -> Server:
    server = Server(
        Path(tempfile.mkdtemp(prefix="swarm-bench-")) / "data",
        cpus=cpus,
        args=("--write-rate", f"{WRITE_RATE:g}", *args),
        tls=tls,
    )
    server.start()
    return server


async def register_all(
    port: int,
    count: int,
    body: Callable[[int], tuple[str, str, dict[str, Any]]],
    concurrency: int = 64,
    tls: ssl.SSLContext | None = None,
) -> None:
    """PUT `count` instances over `concurrency` keep-alive connections; `body(i)` gives (service, id, instance).

    Plain asyncio streams rather than an HTTP client library: the loader must outrun the server.
    """
    queue = iter(range(count))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
        )
        for i in queue:
            service, iid, instance = body(i)
            payload = msgspec.json.encode(instance)
            writer.write(
                f"PUT /v1/services/{service}/instances/{iid} HTTP/1.1\r\nHost: bench\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"registration {iid} failed: {head!r}")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


def load(server: Server, count: int, body: Callable[[int], tuple[str, str, dict[str, Any]]]) -> None:
    tls = server.verify if isinstance(server.verify, ssl.SSLContext) else None
    asyncio.run(register_all(server.port, count, body, tls=tls))


class Wrk:
    """wrk pinned to the load core; returns requests/s and latency percentiles."""

    def __init__(self, seconds: int = 10, connections: int = 64) -> None:
        self.seconds = seconds
        self.connections = connections

    def run(self, url: str, script: str | None = None) -> dict[str, float]:
        command = [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{self.seconds}s",
            "--latency",
            url,
        ]
        if script is not None:
            path = Path(tempfile.mkstemp(suffix=".lua")[1])
            path.write_text(script)
            command[5:5] = ["-s", str(path)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        socket_errors = re.search(r"Socket errors: (.*)", out)
        return {
            "rps": rps,
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "p50_ms": _latency(out, "50%"),
            "p99_ms": _latency(out, "99%"),
            "socket_errors": 1.0 if socket_errors else 0.0,
        }


def round_arguments(description: str | None) -> argparse.Namespace:
    """--seconds per round and --rounds, for the benchmarks that run beside a reference."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=5, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def wait_until_serving(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Until `url` answers 2xx; stops `process` and raises if it has not after 10 seconds."""
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url, timeout=0.5).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.terminate()
                process.wait()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


def alternate(rounds: int, runs: dict[str, Callable[[], dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Each run in turn, `rounds` times over: this machine's speed drifts by a quarter within
    minutes, and figures taken side by side, round after round, compare fairly where one long run
    each would not."""
    results: dict[str, list[dict[str, float]]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            results[label].append(run())
    return results


def _latency(out: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


class Nginx:
    """nginx serving one file, pinned to the server core: the reference for what serving bytes costs."""

    def __init__(self, body: bytes, content_type: str = "application/json", cpu: str = SERVER_CPU) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-nginx-"))
        self.dir.chmod(0o755)  # nginx's workers run as www-data
        (self.dir / "answer.json").write_bytes(body)
        self.port = free_port()
        (self.dir / "nginx.conf").write_text(
            textwrap.dedent(f"""
            worker_processes 1;
            daemon off;
            pid {self.dir}/nginx.pid;
            error_log {self.dir}/error.log;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                default_type {content_type};
                keepalive_requests 1000000;
                server {{
                    listen 127.0.0.1:{self.port};
                    location / {{ root {self.dir}; }}
                }}
            }}
        """)
        )
        self.process = subprocess.Popen(
            ["taskset", "-c", cpu, "nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_serving(self.url, self.process, f"nginx (see {self.dir}/error.log)")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/answer.json"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pid: int, seconds: int, run: Callable[[], dict[str, float]]) -> Callable[[], dict[str, float]]:
    """`run`, adding `cpu_us`: the CPU process `pid` used per request (every thread) while it ran."""

    def measured() -> dict[str, float]:
        before = cpu_seconds(pid)
        result = run()
        result["cpu_us"] = (cpu_seconds(pid) - before) / (result["rps"] * seconds) * 1e6
        return result

    return measured


def metric(text: str, name: str) -> float:
    """The sum of every sample of `name` in a Prometheus text exposition."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
