"""Metric rules at scale: what two CEL rules per instance cost on the heartbeat path, and how soon
a heartbeat that crosses a threshold reaches a watcher.

Three servers, each with the same fleet of TTL instances (capacity max_concurrency 8): one without
metric checks, one with two rules in every instance's checks, one with the same two rules set
service-wide (PUT /v1/services/fleet/rules). Each takes the same paced heartbeat load from wrk
(metrics that change every beat and stay below the thresholds), round by round (A B C A B C): this
machine's speed drifts, and figures taken side by side compare fairly where one long run each would
not. Reported: server CPU per heartbeat and per 1,000 heartbeats/s, and what the rules add.

Latency: a lone instance of a service `probe` (the same rules, per instance or service-wide) is
sent a heartbeat crossing the critical threshold, then one back below it, over and over; the time
runs from just before the heartbeat is sent until an SSE watcher of `probe` reads the change (a
`delete` with reason critical, then the `put` of its return). Taken with the server idle and while
the fleet's heartbeat load runs.

    python -m bench.rules [--instances 10000] [--rate 10000] [--seconds 10] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import uvloop
from tests.server import Server

from bench.common import LOAD_CPU, Wrk, alternate, load, start_server, with_cpu
from bench.heartbeats import SCRIPT

GPU = {
    "type": "metric",
    "name": "gpu",
    "warning": "instance.metrics.gpu_temp_c > 85.0",
    "critical": "instance.metrics.gpu_temp_c > 92.0 || instance.metrics.xid_errors > 0.0",
}
QUEUE = {
    "type": "metric",
    "name": "queue",
    "warning": "instance.metrics.queue_depth > 2.0 * instance.capacity.max_concurrency",
}
RULES = [GPU, QUEUE]
# Every beat new readings, always within limits: 60-79 degrees, a queue of at most 12 of 16.
CHANGING = (
    '\'{"metrics":{"gpu_temp_c":\' .. (60 + counter % 20) .. \',"xid_errors":0,"queue_depth":\''
    " .. (counter % 13) .. '}}'"
)
# Every connection waits this long before each beat: the load is paced, the same in every run,
# rather than as much as each server can take.
PACE_MS = 10
# Long enough to outlast the benchmark: a server waits idle while the others take their rounds,
# and a lapse would turn the next round's first beats into status changes.
TTL = "15m"
CRITICAL = {"gpu_temp_c": 95.0, "xid_errors": 0.0, "queue_depth": 1.0}
PASSING = {"gpu_temp_c": 60.0, "xid_errors": 0.0, "queue_depth": 1.0}


def fleet(rules: list[dict[str, Any]]) -> Callable[[int], tuple[str, str, dict[str, Any]]]:
    def instance(i: int) -> tuple[str, str, dict[str, Any]]:
        body = {
            "address": "10.8.0.7",
            "port": 8000,
            "capacity": {"max_concurrency": 8.0},
            "checks": [{"type": "ttl", "ttl": TTL}, *rules],
        }
        return "fleet", f"i-{i}", body

    return instance


class Setup(msgspec.Struct):
    """One server under test: its fleet carries `own` rules, and `shared` are the fleet's service rules."""

    label: str
    own: list[dict[str, Any]]
    shared: list[dict[str, Any]]


SETUPS = (
    Setup("no rules", [], []),
    Setup("2 rules each", RULES, []),
    Setup("2 service rules", [], RULES),
)


def prepare(setup: Setup, instances: int) -> Server:
    server = start_server()
    for service in ("fleet", "probe"):
        if setup.shared:
            reply = server.http.put(f"/v1/services/{service}/rules", json={"rules": setup.shared})
            reply.raise_for_status()
    load(server, instances, fleet(setup.own))
    probe = fleet(setup.own)(0)[2]
    server.http.put("/v1/services/probe/instances/p", json=probe).raise_for_status()
    return server


async def next_event(reader: asyncio.StreamReader) -> tuple[str, dict[str, Any], float]:
    """The next event's name and data, and when it was read; chunked framing and keepalives skipped."""
    while True:
        block = await reader.readuntil(b"\n\n")
        lines = block.split(b"\n")
        event = next((line[7:].decode() for line in lines if line.startswith(b"event: ")), None)
        data = next((line[6:] for line in lines if line.startswith(b"data: ")), None)
        if event is not None and data is not None:
            return event, msgspec.json.decode(data), time.perf_counter()


async def flips(port: int, count: int) -> list[float]:
    """Milliseconds from each threshold-crossing heartbeat to the watcher reading the change."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/watch?service=probe HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    event, _, _ = await next_event(reader)
    if event != "snapshot":
        raise RuntimeError(f"a watch opened with {event}, not a snapshot")
    delays = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for n in range(count):
            critical = n % 2 == 0
            waiting = asyncio.ensure_future(next_event(reader))
            await asyncio.sleep(0.02)  # the reader is parked on its socket
            started = time.perf_counter()
            reply = await http.put(
                "/v1/services/probe/instances/p/heartbeat", json={"metrics": CRITICAL if critical else PASSING}
            )
            reply.raise_for_status()
            event, data, seen = await asyncio.wait_for(waiting, 10)
            expected = ("delete", "critical") if critical else ("put", None)
            if (event, data.get("reason") if event == "delete" else None) != expected:
                raise RuntimeError(f"beat {n}: expected {expected}, the watcher read {event} {data}")
            delays.append((seen - started) * 1000)
    writer.close()
    return delays


def percentiles(delays: list[float]) -> str:
    p50 = statistics.median(delays)
    p99 = statistics.quantiles(delays, n=100, method="inclusive")[98]
    return f"{p50:>7.1f} {p99:>7.1f} {max(delays):>7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10_000)
    # 10,000/s is the fleet; one shared core serves about 4,500/s with rules, and the
    # comparison holds only at a rate every server sustains.
    parser.add_argument("--rate", type=int, default=3000, help="heartbeats/s the paced load aims at")
    parser.add_argument("--seconds", type=int, default=10, help="per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flips", type=int, default=50, help="threshold crossings per latency sample")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 instances, 3 s rounds")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.seconds, args.flips = min(args.instances, 2000), 3, 10
    connections = max(1, args.rate * PACE_MS // 1000)
    script = (
        SCRIPT.replace("METRICS", CHANGING).replace("INSTANCES", str(args.instances))
        + f"\nfunction delay() return {PACE_MS} end\n"
    )
    wrk = Wrk(seconds=args.seconds, connections=connections)
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # the servers pin themselves to the other core
    servers: dict[str, Server] = {}
    idle: dict[str, list[float]] = {}
    loaded: dict[str, list[float]] = {}
    try:
        for setup in SETUPS:
            servers[setup.label] = prepare(setup, args.instances)
        for setup in SETUPS[1:]:
            idle[setup.label] = uvloop.run(flips(servers[setup.label].port, args.flips))
            loaded[setup.label] = []

        def beats(label: str) -> Callable[[], dict[str, float]]:
            server = servers[label]

            def run() -> dict[str, float]:
                result: dict[str, float] = {}
                driver = threading.Thread(target=lambda: result.update(wrk.run(server.url, script)))
                driver.start()
                if label in loaded:
                    time.sleep(min(1.0, args.seconds / 4))  # the load is under way
                    loaded[label] += uvloop.run(flips(server.port, args.flips))
                driver.join()
                if result["non2xx"] or result["socket_errors"]:
                    raise RuntimeError(f"{label}: heartbeats failed: {result}")
                return result

            return with_cpu(server.worker_pid(), args.seconds, run)

        results = alternate(args.rounds, {label: beats(label) for label in servers})
        for label, server in servers.items():
            listed = len(server.http.get("/v1/services/fleet", timeout=30).json())
            if listed != args.instances:
                raise RuntimeError(f"{label}: {listed} of {args.instances} instances still passing")
    finally:
        for server in servers.values():
            server.stop()

    print(
        f"{args.instances} TTL instances heartbeating, wrk -t1 -c{connections} -d{args.seconds}s paced at"
        f" {PACE_MS} ms per connection (aim: {args.rate}/s), metrics new every beat and within limits;"
        " the three servers on core 0 one at a time, wrk and watcher on core 1; rounds interleaved"
        f" ({' '.join('ABC'[: len(SETUPS)] * args.rounds)}); 2 shared cores: noisy"
    )
    print(f"{'rules':16} {'round':>5} {'beats/s':>8} {'CPU us/beat':>11} {'core/1k beats/s':>15} {'vs none':>8}")
    for label, rounds in results.items():
        for n, (ours, bare) in enumerate(zip(rounds, results["no rules"], strict=True), 1):
            added = ours["cpu_us"] / bare["cpu_us"] - 1
            print(
                f"{label:16} {n:>5} {ours['rps']:>8.0f} {ours['cpu_us']:>11.1f} {ours['cpu_us'] / 1000:>15.3f}"
                f" {added:>+8.0%}"
            )
    for n, row in enumerate(zip(*results.values(), strict=True), 1):
        rates = [r["rps"] for r in row]
        if min(rates) < 0.9 * max(rates):
            print(f"round {n}: the servers took unequal loads (a server saturated): lower --rate")
    for label in loaded:
        added = statistics.median(
            o["cpu_us"] / b["cpu_us"] - 1 for o, b in zip(results[label], results["no rules"], strict=True)
        )
        print(f"{label}: CPU per heartbeat {added:+.0%} beside no rules, median of rounds (target: at most +30%)")
    print(f"threshold crossing -> SSE watcher, ms ({args.flips} crossings per sample, alternately up and down)")
    print(f"{'rules':16} {'fleet load':>10} {'n':>4} {'p50':>7} {'p99':>7} {'max':>7}")
    for label in loaded:
        for state, delays in (("idle", idle[label]), ("beating", loaded[label])):
            print(f"{label:16} {state:>10} {len(delays):>4} {percentiles(delays)}")
    print("target: under 50 ms")


if __name__ == "__main__":
    main()
