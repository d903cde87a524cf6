"""The SDK balancer with real backends: a slow backend, and one killed with kill -9.

1. Three backends, one five times slower: p99 latency with least_loaded against round_robin.
2. Steady load over three backends, one killed with `kill -9`: failed requests and how long the
   dead one kept receiving, for the SDK balancer and for HAProxy 2.6 (Debian) in front of the same
   backends with its documented default check settings (`check`: inter 2s, fall 3, rise 2).

    python -m bench.balancer [--requests 2000]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.server import free_port

from bench.common import SERVER_CPU, start_server
from swarm_discovery import Client
from swarm_discovery.sdk.balancer import Balancer

FAST = 0.010
CONCURRENCY = 16


class Backends:
    """Python backends on the server's core (the registry is idle here); the load runs on the other."""

    def __init__(self, delays: list[float]) -> None:
        self.ports = [free_port() for _ in delays]
        self.processes = [
            subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    SERVER_CPU,
                    sys.executable,
                    "-m",
                    "bench.backend",
                    "--port",
                    str(port),
                    "--name",
                    f"b{i}",
                    "--delay",
                    str(delay),
                ]
            )
            for i, (port, delay) in enumerate(zip(self.ports, delays, strict=True))
        ]
        for port in self.ports:
            for _ in range(200):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)

    def register(self, http: httpx.Client, service: str) -> None:
        for i, port in enumerate(self.ports):
            http.put(
                f"/v1/services/{service}/instances/b{i}", json={"address": "127.0.0.1", "port": port}
            ).raise_for_status()

    def kill(self, index: int) -> None:
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait()


def drive(
    send: Callable[[], str],
    total: int,
    on: dict[int, Callable[[], None]] | None = None,
    concurrency: int = CONCURRENCY,
) -> list[tuple[float, float, str]]:
    """`total` requests from `concurrency` threads: (start, latency, backend or "error") for each."""
    results: list[tuple[float, float, str]] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def work() -> None:
        for n in counter:
            if on and n in on:
                on[n]()
            started = time.perf_counter()
            try:
                who = send()
            except Exception as exc:
                who = f"error: {type(exc).__name__}"
            with lock:
                results.append((started, time.perf_counter() - started, who))

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def p99(results: list[tuple[float, float, str]]) -> float:
    latencies = sorted(latency for _, latency, _ in results)
    return latencies[int(len(latencies) * 0.99)] * 1000


def slow_backend(server_addr: str, http: httpx.Client, total: int) -> None:
    backends = Backends([FAST, FAST, FAST * 5])
    try:
        backends.register(http, "slowtest")
        print(f"1. three backends, b2 five times slower ({FAST * 1000:g} ms vs {FAST * 5000:g} ms); {total} requests")
        for concurrency in (4, CONCURRENCY):
            figures = {}
            for strategy in ("round_robin", "least_loaded"):
                with Client(server_addr) as client, client.balancer("slowtest", strategy=strategy) as lb:

                    def send(lb: Balancer = lb) -> str:
                        return lb.request("GET", "/").text

                    drive(send, total // 10, concurrency=concurrency)  # warm up
                    results = drive(send, total, concurrency=concurrency)
                share = sum(who == "b2" for *_, who in results) / len(results)
                fast = [r for r in results if r[2] != "b2"]
                figures[strategy] = p99(results)
                print(
                    f"   {concurrency:2} threads, {strategy:13} p99 {figures[strategy]:6.1f} ms "
                    f"(fast backends alone {p99(fast):.1f} ms), share sent to the slow one {share:.0%}"
                )
            ratio = figures["least_loaded"] / figures["round_robin"]
            print(f"   {concurrency:2} threads: least_loaded / round_robin p99 = {ratio:.2f} (target at most 0.5)")
    finally:
        backends.stop()


HAPROXY_CONFIG = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend in
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
    balance roundrobin
{servers}
"""


Sender = tuple[Callable[[], str], Callable[[], None]]  # send one request, close


def through_sdk(server_addr: str, http: httpx.Client, backends: Backends) -> Sender:
    service = f"killtest-{time.monotonic_ns()}"
    backends.register(http, service)
    client = Client(server_addr)
    lb = client.balancer(service, strategy="round_robin")

    def close() -> None:
        lb.close()
        client.close()

    return (lambda: lb.request("GET", "/").text), close


def through_haproxy(backends: Backends) -> Sender:
    port = free_port()
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p} check" for i, p in enumerate(backends.ports))
    config = Path(tempfile.mkdtemp()) / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    proxy = subprocess.Popen(["taskset", "-c", "0", "haproxy", "-f", str(config)])
    time.sleep(0.5)
    session = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def close() -> None:
        session.close()
        proxy.terminate()
        proxy.wait()

    return (lambda: session.get("/").raise_for_status().text), close


def measure_kill(label: str, send: Callable[[], str], backends: Backends, total: int) -> None:
    killed_at: list[float] = []

    def kill() -> None:
        backends.kill(1)
        killed_at.append(time.perf_counter())

    results = drive(send, total, {total // 4: kill})
    failed = sum(who.startswith("error") for *_, who in results)
    after = [(start, latency, who) for start, latency, who in results if start > killed_at[0]]
    hurt = [start + latency for start, latency, who in after if who == "b1" or who.startswith("error") or latency > 0.5]
    last = max(hurt, default=killed_at[0]) - killed_at[0]
    print(
        f"   {label:10} failed requests: {failed}; served by the dead one, failed or slower than 0.5 s "
        f"until {last:.2f} s after the kill; p99 {p99(results):.1f} ms"
    )


def killed_backend(server_addr: str, http: httpx.Client, total: int) -> None:
    print(f"2. three backends, b1 killed with kill -9 after {total // 4} of {total} requests ({CONCURRENCY} threads)")
    for label in ("swarm SDK", "HAProxy"):
        backends = Backends([FAST, FAST, FAST])
        send, close = through_sdk(server_addr, http, backends) if label == "swarm SDK" else through_haproxy(backends)
        try:
            measure_kill(label, send, backends, total)
        finally:
            close()
            backends.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    # The load comes from Python threads: with the default 5 ms GIL switch interval, a thread that
    # has its answer waits for the others, and that wait, not the backends, would dominate p99.
    sys.setswitchinterval(0.0002)
    if shutil.which("haproxy") is None:
        subprocess.run(["bash", "bench/setup.sh"], check=True)
    server = start_server()
    try:
        http = httpx.Client(base_url=server.url)
        slow_backend(server.addr, http, args.requests)
        killed_backend(server.addr, http, args.requests)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
