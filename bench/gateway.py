"""`swarm gateway` beside HAProxy 2.6 (Debian), and its AI-aware routing on the LLM simulator.

1. Plain proxying: wrk through the gateway and through HAProxy to the same two nginx backends,
   round after round; requests/s as a ratio to HAProxy's (target at least 0.25) and the median
   latency each adds over going to nginx directly, at 1 and 64 connections. The target for the
   latency added (under 1 ms) is at 1 connection, where it is the proxy's own time: 64 connections
   of wrk keep every proxy saturated, and its median there is mostly the queue (about 64 requests
   over its requests/s, by Little's law).
   The proxies are pinned to core 0; nginx and wrk share core 1.
2. A backend killed with kill -9 under load, one of three: failed requests, and until when the
   dead one still got requests (or made them fail or slow), through the gateway and through
   HAProxy with its documented default checks (`check`: inter 2s, fall 3, rise 2).
3. AI routing: a shared-prefix chat workload (many users, a few long system prompts, several
   turns each, every turn carrying the conversation so far) on simulated model servers with a
   prefix KV cache too small for every prompt; mean and p99 time to first token and tokens/s
   for round_robin, least_loaded and ai_aware (targets: ai_aware's mean TTFT at most 0.3 of
   round robin's, p99 at most 0.5, throughput not lower). Fresh servers (cold caches) each run.

    python -m bench.gateway [--seconds 5] [--rounds 3] [--parts 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
from tests.gateway import GatewayProcess, Simulators
from tests.server import Server, free_port

from bench.balancer import HAPROXY_CONFIG, Backends, measure_kill
from bench.common import LOAD_CPU, SERVER_CPU, Nginx, Wrk, alternate, start_server

ANSWER = b'{"id": "x", "object": "chat.completion", "choices": [{"text": "' + b"y" * 200 + b'"}]}'


def haproxy(ports: list[int], check: str = "") -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}{check}" for i, p in enumerate(ports))
    config = Path(tempfile.mkdtemp()) / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    process = subprocess.Popen(["taskset", "-c", SERVER_CPU, "haproxy", "-f", str(config)])
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/answer.json", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return port, process


def register(server: Server, service: str, ports: list[int], **fields: object) -> None:
    for i, port in enumerate(ports):
        body = {"address": "127.0.0.1", "port": port, **fields}
        server.http.put(f"/v1/services/{service}/instances/b{i}", json=body).raise_for_status()


def proxying(server: Server, seconds: int, rounds: int) -> None:
    print("1. plain proxying to two nginx backends (proxies on core 0, nginx and wrk on core 1)")
    backends = [Nginx(ANSWER, cpu=LOAD_CPU) for _ in range(2)]
    register(server, "static", [b.port for b in backends])
    gateway = GatewayProcess(server.addr, Path(tempfile.mkdtemp()), cpus=SERVER_CPU)
    port, proxy = haproxy([b.port for b in backends])
    try:
        for connections in (64, 1):
            wrk = Wrk(seconds, connections)
            urls = {
                "direct": backends[0].url,
                "HAProxy": f"http://127.0.0.1:{port}/answer.json",
                "gateway": f"{gateway.url}/static/answer.json",
            }
            Wrk(1, connections).run(urls["gateway"])  # warm the gateway's connections
            results = alternate(rounds, {label: (lambda url=url, wrk=wrk: wrk.run(url)) for label, url in urls.items()})
            figures = {label: _median(runs) for label, runs in results.items()}
            for label, f in figures.items():
                print(
                    f"   {connections:2} connections, {label:8} {f['rps']:8.0f} req/s  p50 {f['p50_ms']:6.3f} ms"
                    f"  p99 {f['p99_ms']:6.2f} ms  errors {f['non2xx'] + f['socket_errors']:.0f}"
                )
            ratio = figures["gateway"]["rps"] / figures["HAProxy"]["rps"]
            added = figures["gateway"]["p50_ms"] - figures["direct"]["p50_ms"]
            added_haproxy = figures["HAProxy"]["p50_ms"] - figures["direct"]["p50_ms"]
            target = "target under 1 ms" if connections == 1 else "saturated: mostly the queue"
            print(
                f"   {connections:2} connections: gateway / HAProxy requests/s = {ratio:.2f} (target at least 0.25);"
                f" median added over direct: gateway {added:.3f} ms ({target}), HAProxy {added_haproxy:.3f} ms"
            )
    finally:
        gateway.stop()
        proxy.terminate()
        proxy.wait()
        for backend in backends:
            backend.stop()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def killed_backend(server: Server, total: int) -> None:
    print(f"2. three backends, b1 killed with kill -9 after {total // 4} of {total} requests (16 threads)")
    for label in ("gateway", "HAProxy"):
        backends = Backends([0.010, 0.010, 0.010])
        if label == "gateway":
            service = f"kill-{time.monotonic_ns()}"
            backends.register(server.http, service)
            gateway = GatewayProcess(server.addr, Path(tempfile.mkdtemp()), ("--strategy", "round_robin"), SERVER_CPU)
            session = httpx.Client(base_url=gateway.url, timeout=10)

            def send(session: httpx.Client = session, path: str = f"/{service}/") -> str:
                return session.get(path).raise_for_status().text

            close: Callable[[], None] = gateway.stop
        else:
            port, proxy = haproxy(backends.ports, " check")
            session = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

            def send(session: httpx.Client = session) -> str:
                return session.get("/").raise_for_status().text

            def close(proxy: subprocess.Popen[bytes] = proxy) -> None:
                proxy.terminate()
                proxy.wait()

        try:
            measure_kill(label, send, backends, total)
        finally:
            session.close()
            close()
            backends.stop()


# --- 3. AI routing ----------------------------------------------------------------------------------

SIMULATOR = ("--model", "chat", "--max-seqs", "8", "--step-ms", "10", "--prefill-us", "300", "--cache-blocks", "600")
SERVERS = 4
SYSTEM_PROMPTS = 6
SYSTEM_WORDS = 1200
USERS = 48
TURNS = 8
ARRIVALS = 4.0  # seconds over which the users arrive
THINK = 0.4  # seconds at most between an answer and the next question
OUTPUT_TOKENS = 16


def _system(n: int) -> str:
    rng = random.Random(n)
    return f"You are assistant {n}. " + " ".join(f"rule-{n}-{rng.randrange(10**6)}" for _ in range(SYSTEM_WORDS))


async def _conversation(http: aiohttp.ClientSession, url: str, user: int, results: list[tuple[float, int]]) -> None:
    messages = [{"role": "system", "content": _system(user % SYSTEM_PROMPTS)}]
    rng = random.Random(user)
    await asyncio.sleep(rng.random() * ARRIVALS)  # users arrive over a few seconds
    for turn in range(TURNS):
        if turn:
            await asyncio.sleep(rng.random() * THINK)  # and read the answer before the next question
        messages.append({"role": "user", "content": " ".join(f"q{user}-{turn}-{i}" for i in range(30))})
        body = {"model": "chat", "messages": messages, "stream": True, "max_tokens": OUTPUT_TOKENS}
        started = time.perf_counter()
        first, tokens, text = None, 0, []
        async with http.post(url, json=body) as answer:
            answer.raise_for_status()
            async for line in answer.content:
                if line.startswith(b"data: {"):
                    first = first or time.perf_counter() - started
                    tokens += 1
                    text.append(line.decode()[-12:])
        assert first is not None
        results.append((first, tokens))
        messages.append({"role": "assistant", "content": " ".join(text)})


async def _workload(url: str) -> tuple[list[tuple[float, int]], float]:
    results: list[tuple[float, int]] = []
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        await asyncio.gather(*(_conversation(http, url, user, results) for user in range(USERS)))
    return results, time.perf_counter() - started


def ai_routing(server: Server, rounds: int) -> None:
    print(
        f"3. {USERS} users, {SYSTEM_PROMPTS} system prompts of {SYSTEM_WORDS} tokens, {TURNS} turns each, on"
        f" {SERVERS} simulated servers (8 sequences, a KV cache of 600 blocks of 16 tokens,"
        " 0.3 ms a prefilled token, 10 ms a decode step)"
    )
    figures: dict[str, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for strategy in ("round_robin", "least_loaded", "ai_aware"):
            sims = Simulators(SERVERS, SIMULATOR, cpus=LOAD_CPU)
            service = f"chat-{time.monotonic_ns()}"
            register(server, service, sims.ports, capabilities={"models": ["chat"]}, capacity={"max_concurrency": 8})
            routes = Path(tempfile.mkdtemp()) / "routes.toml"
            routes.write_text(f'[models]\nservices = ["{service}"]\nstrategy = "{strategy}"\nscrape = "/metrics"\n')
            gateway = GatewayProcess(server.addr, routes.parent, ("--routes", str(routes)), SERVER_CPU)
            try:
                while "chat" not in gateway.status()["models"]:
                    time.sleep(0.05)
                results, wall = asyncio.run(_workload(f"{gateway.url}/v1/chat/completions"))
            finally:
                gateway.stop()
                sims.stop()
                for i in range(SERVERS):
                    server.http.delete(f"/v1/services/{service}/instances/b{i}")
            ttfts = sorted(first for first, _ in results)
            figures.setdefault(strategy, []).append(
                {
                    "mean": statistics.mean(ttfts) * 1000,
                    "p99": ttfts[int(len(ttfts) * 0.99)] * 1000,
                    "tokens_s": sum(tokens for _, tokens in results) / wall,
                }
            )
    medians = {strategy: _median(runs) for strategy, runs in figures.items()}
    for strategy, f in medians.items():
        print(f"   {strategy:13} TTFT mean {f['mean']:7.1f} ms  p99 {f['p99']:7.1f} ms  {f['tokens_s']:7.1f} tokens/s")
    rr, ai = medians["round_robin"], medians["ai_aware"]
    print(
        f"   ai_aware / round_robin: mean TTFT {ai['mean'] / rr['mean']:.2f} (target at most 0.3), "
        f"p99 {ai['p99'] / rr['p99']:.2f} (at most 0.5), tokens/s {ai['tokens_s'] / rr['tokens_s']:.2f} (at least 1)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="for the kill")
    parser.add_argument("--parts", default="1,2,3")
    args = parser.parse_args()
    sys.setswitchinterval(0.0002)  # the kill's load comes from Python threads (see bench.balancer)
    if shutil.which("haproxy") is None or shutil.which("wrk") is None:
        subprocess.run(["bash", "bench/setup.sh"], check=True)
    server = start_server()
    parts = set(args.parts.split(","))
    try:
        if "1" in parts:
            proxying(server, args.seconds, args.rounds)
        if "2" in parts:
            killed_backend(server, args.requests)
        if "3" in parts:
            ai_routing(server, args.rounds)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
