"""Servers on etcd: registrations/s through one server beside etcd's own put rate, and how long a
write through one server takes to reach a watcher on another.

1. One etcd member (data on disk, fsync as in production) and one `swarm serve --store etcd://...`,
   both pinned to core 0, wrk on core 1 with 64 connections: acknowledged registrations/s. Round
   by round, the same wrk puts as many new keys of the same size straight into etcd through its
   JSON gateway (POST /v3/kv/put): etcd's own rate on the same core, from the same load
   generator. The ratio is what our layer costs (target: at least 0.7).
2. Two servers on that member; a watcher (SSE) on B; writes through A one after another: the time
   from sending the PUT to A until B's watcher has the event, median and p99 (target p99 < 100 ms).

    python -m bench.etcd [--seconds 5] [--rounds 3] [--writes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.etcd import EtcdCluster
from tests.server import Server

from bench.common import LOAD_CPU, SERVER_CPU, Wrk, alternate, with_cpu
from bench.writes import SCRIPT as REGISTRATIONS
from swarm_discovery.store import Put
from swarm_discovery.store.etcd import EtcdStore

# wrk's Lua has no base64: a small encoder, for new keys of etcd's JSON API.
ETCD_PUTS = r"""
local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, byte = '', x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b:sub(c + 1, c + 1)
  end) .. ({'', '==', '='})[#data % 3 + 1])
end
local counter = 0
local thread_id = 0
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
local value = b64('VALUE')
request = function()
  counter = counter + 1
  local key = b64('/raw/instances/llm/i-ROUND-' .. tid .. '-' .. counter)
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
    '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
"""
# What the server stores for one registration of bench.writes' body, about: the same bytes to etcd.
STORED = (
    '{"spec":{"address":"10.8.0.7","port":8000,"version":"1.4.2","tags":["vllm"],'
    '"location":{"region":"eu-west","zone":"eu-west-1a"},'
    '"capabilities":{"gpu":{"model":"H100","memory_gb":80,"count":8}},"metrics":{"queue_depth":3},'
    '"service":"llm","id":"i-0-0-1"},"registered_at":1796187180.378}'
)


async def _raw_puts(endpoint: str, seconds: int, connections: int = 64) -> dict[str, float]:
    """New keys put over gRPC by 64 concurrent writers for `seconds`: etcd's own rate over its native API."""
    store = EtcdStore([endpoint], "/raw-grpc/")
    await store.open()
    value, done, latencies = STORED.encode(), 0, []
    stop = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        nonlocal done
        count = 0
        while time.perf_counter() < stop:
            count += 1
            started = time.perf_counter()
            await store.txn([], [Put(f"instances/llm/i-{n}-{count}", value)])
            latencies.append((time.perf_counter() - started) * 1000)
            done += 1

    await asyncio.gather(*(writer(n) for n in range(connections)))
    await store.close()
    latencies.sort()
    return {
        "rps": done / seconds,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
    }


def _raw_puts_on_load_core(endpoint: str, seconds: int) -> dict[str, float]:
    """`_raw_puts` in a child process pinned to the load core, like wrk."""
    code = "import asyncio, json, sys; from bench.etcd import _raw_puts; " + (
        "print(json.dumps(asyncio.run(_raw_puts(sys.argv[1], int(sys.argv[2])))))"
    )
    command = ["taskset", "-c", LOAD_CPU, sys.executable, "-c", code, endpoint, str(seconds)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def registrations(args: argparse.Namespace, cluster: EtcdCluster) -> None:
    root = Path(tempfile.mkdtemp(prefix="swarm-bench-etcd-"))
    server = Server(root / "data", cpus=SERVER_CPU, args=("--store", cluster.url("bench")))
    server.start()
    etcd = cluster.members[0]
    try:
        wrk, rounds = Wrk(seconds=args.seconds), iter(range(args.rounds))
        puts = iter(range(args.rounds))
        assert etcd.process is not None
        results = alternate(
            args.rounds,
            {
                "swarm": with_cpu(
                    server.worker_pid(),
                    args.seconds,
                    lambda: wrk.run(server.url, REGISTRATIONS.replace("ROUND", str(next(rounds)))),
                ),
                "etcd": with_cpu(
                    etcd.process.pid,
                    args.seconds,
                    lambda: wrk.run(
                        f"http://{etcd.endpoint}",
                        ETCD_PUTS.replace("ROUND", str(next(puts))).replace("VALUE", STORED),
                    ),
                ),
                "grpc": lambda: _raw_puts_on_load_core(etcd.endpoint, args.seconds),
            },
        )
    finally:
        server.stop()
    print(
        f"wrk -t1 -c64 -d{args.seconds}s on core {LOAD_CPU}: PUT /v1/services/llm/instances/<new id> to swarm "
        f"on etcd (both on core {SERVER_CPU}), then POST /v3/kv/put of a new key of {len(STORED)} bytes "
        f"to etcd itself; {args.rounds} rounds"
    )
    print(
        f"then 64 writers putting new keys of the same size over gRPC (our EtcdStore.txn, a process on core "
        f"{LOAD_CPU}): etcd's own rate over its native API"
    )
    print(
        f"{'round':6} {'swarm req/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
        f"{'gateway put/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'gRPC put/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'/gateway':>8} {'/gRPC':>6}"
    )
    rows = zip(results["swarm"], results["etcd"], results["grpc"], strict=True)
    for n, (ours, gateway, native) in enumerate(rows, 1):
        print(
            f"{n:<6} {ours['rps']:>11.0f} {ours['p50_ms']:>7.2f} {ours['p99_ms']:>7.2f} {ours['non2xx']:>7.0f}"
            f" {gateway['rps']:>13.0f} {gateway['p50_ms']:>7.2f} {gateway['p99_ms']:>7.2f}"
            f" {native['rps']:>10.0f} {native['p50_ms']:>7.2f} {native['p99_ms']:>7.2f}"
            f" {ours['rps'] / gateway['rps']:>8.2f} {ours['rps'] / native['rps']:>6.2f}"
        )
    for reference, name in (("etcd", "its JSON gateway"), ("grpc", "gRPC")):
        pairs = zip(results["swarm"], results[reference], strict=True)
        ratio = statistics.median(ours["rps"] / theirs["rps"] for ours, theirs in pairs)
        print(
            f"registrations/s through swarm over etcd's own puts/s through {name}, median: {ratio:.2f} (target >= 0.7)"
        )


async def _latencies(a: Server, b: Server, writes: int) -> list[float]:
    service = "latency"
    seen: dict[str, float] = {}
    arrived = asyncio.Event()
    async with httpx.AsyncClient(timeout=10) as http:

        async def watch() -> None:
            async with http.stream("GET", f"{b.url}/v1/watch", params={"service": service}) as stream:
                event = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "put":
                        seen[json.loads(line.removeprefix("data: "))["id"]] = time.perf_counter()
                        arrived.set()
                    elif event == "snapshot":
                        arrived.set()

        watcher = asyncio.ensure_future(watch())
        await asyncio.wait_for(arrived.wait(), 10)  # the snapshot: the watch is open
        latencies = []
        for n in range(writes):
            arrived.clear()
            iid = f"w{n}"
            sent = time.perf_counter()
            answer = await http.put(
                f"{a.url}/v1/services/{service}/instances/{iid}", json={"address": "10.0.0.1", "port": 80}
            )
            answer.raise_for_status()
            while iid not in seen:
                await asyncio.wait_for(arrived.wait(), 10)
                arrived.clear()
            latencies.append((seen[iid] - sent) * 1000)
        watcher.cancel()
    return latencies


def watcher_latency(args: argparse.Namespace, cluster: EtcdCluster) -> None:
    root = Path(tempfile.mkdtemp(prefix="swarm-bench-etcd-"))
    a = Server(root / "a" / "data", cpus=SERVER_CPU, args=("--store", cluster.url("latency")))
    b = Server(root / "b" / "data", cpus=LOAD_CPU, args=("--store", cluster.url("latency")))
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    a.start()
    b.start()
    try:
        latencies = sorted(asyncio.run(_latencies(a, b, args.writes)))
    finally:
        a.stop()
        b.stop()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{args.writes} writes through A (core {SERVER_CPU}), one after another, to a watcher on B (core {LOAD_CPU}): "
        f"median {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms (target p99 < 100)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=300, help="writes timed to the watcher")
    args = parser.parse_args()
    cluster = EtcdCluster(1, in_memory=False, cpus=SERVER_CPU)
    cluster.start()
    try:
        registrations(args, cluster)
        watcher_latency(args, cluster)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
