"""Servers on etcd: registrations/s through one server beside etcd's own put rate, and how long a
write through one server takes to reach a watcher on another.

1. One etcd member (data on disk, fsync as in production) and one `swarm serve --store etcd://...`,
   both pinned to core 0, wrk on core 1 with 64 connections: acknowledged registrations/s. Round
   by round, the same wrk puts as many new keys of the same size straight into etcd through its
   JSON gateway (POST /v3/kv/put): etcd's own rate on the same core, from the same load
   generator. The ratio is what our layer costs (target: at least 0.7).
2. Two servers on that member; a watcher (SSE) on B; writes through A one after another: the time
   from sending the PUT to A until B's watcher has the event, median and p99 (target p99 < 100 ms).
3. Reads: bench.reads' query (20 of 10,000 instances) from a server on SQLite and one on that etcd
   member, loaded alike, and nginx serving the same bytes, round by round (all on core 0, wrk on
   core 1): each server's ratio to nginx, and the quotient of the two (target: 1, reads come from
   memory on either store).
4. A million instances (`--instances`, one or more sizes, loaded in turn) put straight into a member
   of their own (on core 1; its quota raised to 8 GiB), as the registry stores them, 100 to a
   transaction; then a fresh server (core 0) is started on them: the time from its process's start
   until it serves them all, its worker's resident memory per instance (beside a server started on
   none), and the same for a second server started while the first runs.
   `page ms` is one page of the server's snapshot: etcd (3.4 here, 3.5 too) visits every key to
   the range's end to count them, so a load costs about the square of the count.

    python -m bench.etcd [--part registrations|latency|reads|million ...] [--seconds 5] [--rounds 3]
        [--writes 300] [--instances 1000000 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
from tests.etcd import EtcdCluster, Member
from tests.server import Server

from bench.common import LOAD_CPU, SERVER_CPU, Nginx, Wrk, alternate, load, rss_mb, start_server, with_cpu
from bench.reads import SELECTOR, instance
from bench.writes import SCRIPT as REGISTRATIONS
from swarm_discovery.core.registry import instance_key
from swarm_discovery.records import InstanceRecord
from swarm_discovery.store import Put
from swarm_discovery.store.etcd import PAGE, EtcdStore

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


def _acknowledged(run: dict[str, float], args: argparse.Namespace) -> float:
    """Registrations acknowledged a second: a refusal (a 429, a 503) is quick and no registration."""
    return run["rps"] - run["non2xx"] / args.seconds


def registrations(args: argparse.Namespace, cluster: EtcdCluster) -> None:
    server = start_server(args=("--store", cluster.url("bench")))
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
        f"{LOAD_CPU}, which merges what arrives together): etcd's own rate over its native API"
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
            f" {_acknowledged(ours, args) / gateway['rps']:>8.2f} {_acknowledged(ours, args) / native['rps']:>6.2f}"
        )
    for reference, name in (("etcd", "its JSON gateway"), ("grpc", "gRPC")):
        pairs = zip(results["swarm"], results[reference], strict=True)
        ratio = statistics.median(_acknowledged(ours, args) / theirs["rps"] for ours, theirs in pairs)
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


def reads(args: argparse.Namespace, cluster: EtcdCluster) -> None:
    path = f"/v1/services/llm?selector={quote(SELECTOR)}"
    servers: dict[str, Server] = {}
    try:
        servers["sqlite"] = start_server()
        servers["etcd"] = start_server(args=("--store", cluster.url("reads")))
        for label, server in servers.items():
            print(f"loading 10,000 instances into the server on {label} ...", flush=True)
            load(server, 10_000, instance)
        answers = {label: server.http.get(path).content for label, server in servers.items()}
        assert all(len(msgspec.json.decode(a)) == 20 for a in answers.values()), "20 instances of 10,000 match"
        nginx = Nginx(answers["sqlite"])
        try:
            wrk = Wrk(seconds=args.seconds)
            runs: dict[str, Callable[[], dict[str, float]]] = {
                label: with_cpu(server.worker_pid(), args.seconds, lambda s=server: wrk.run(s.url + path))
                for label, server in servers.items()
            }
            runs["nginx"] = lambda: wrk.run(nginx.url)
            results = alternate(args.rounds, runs)
        finally:
            nginx.stop()
    finally:
        for server in servers.values():
            server.stop()
    sizes = ", ".join(f"{label} {len(answer)}" for label, answer in answers.items())
    print(
        f"answer: 20 instances of 10,000 (bytes: {sizes}; nginx serves sqlite's); wrk -t1 -c64 -d{args.seconds}s, "
        f"{args.rounds} rounds of sqlite, etcd, nginx; servers, nginx and etcd on core {SERVER_CPU}, "
        f"wrk on core {LOAD_CPU}"
    )
    print(f"{'round':6} {'':7} {'req/s':>8} {'CPU us/req':>11} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}")
    for n in range(args.rounds):
        for label in runs:
            r = results[label][n]
            cpu = f"{r['cpu_us']:>11.1f}" if "cpu_us" in r else f"{'':>11}"
            latency = f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            print(f"{n + 1:<6} {label:7} {r['rps']:>8.0f} {cpu} {latency} {r['non2xx']:>7.0f}")
    rounds = list(zip(results["sqlite"], results["etcd"], results["nginx"], strict=True))
    ratios = {
        "sqlite/nginx": [sqlite["rps"] / ref["rps"] for sqlite, _, ref in rounds],
        "etcd/nginx": [etcd["rps"] / ref["rps"] for _, etcd, ref in rounds],
        "etcd/sqlite": [etcd["rps"] / sqlite["rps"] for sqlite, etcd, _ in rounds],
        "etcd/sqlite CPU per request": [sqlite["cpu_us"] / etcd["cpu_us"] for sqlite, etcd, _ in rounds],
    }
    for label, values in ratios.items():
        print(f"{label} by round: {', '.join(f'{v:.2f}' for v in values)}; median {statistics.median(values):.2f}")
    print("target: etcd/nginx as sqlite/nginx, a quotient of 1")


# A million instances over this many services: 50,000 each, under the default cap of 100,000 a service.
SERVICES = 20
BATCH = 100  # puts to a transaction (etcd takes 128)
FILLERS = 16  # transactions in flight
QUOTA = 8 << 30  # etcd's default (2 GiB) is about what a million records take with their history
TEMPLATE = msgspec.json.decode(STORED, type=InstanceRecord)


def _placed(n: int) -> tuple[str, str]:
    return ("llm" if n % SERVICES == 0 else f"llm-{n % SERVICES}"), f"i-{n}"


def _record(n: int) -> Put:
    """Instance `n` as the registry stores it: bench.writes' GPU instance, at an address of its own."""
    service, iid = _placed(n)
    address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    spec = msgspec.structs.replace(TEMPLATE.spec, service=service, id=iid, address=address)
    record = msgspec.structs.replace(TEMPLATE, spec=spec, registered_at=time.time())
    return Put(instance_key(service, iid), msgspec.json.encode(record))


async def _fill(endpoint: str, prefix: str, start: int, stop: int) -> float:
    """Instances `start` to `stop` put under `prefix`, `BATCH` to a transaction, `FILLERS` at a time:
    the seconds the puts took (opening the store reads what is there, slowly: see `_page_ms`)."""
    store = EtcdStore([endpoint], prefix)
    await store.open()
    batches = iter(range(start, stop, BATCH))

    async def filler() -> None:
        for first in batches:
            await store.txn([], [_record(n) for n in range(first, min(first + BATCH, stop))])

    started = time.perf_counter()
    await asyncio.gather(*(filler() for _ in range(FILLERS)))
    took = time.perf_counter() - started
    await store.close()
    return took


def _page_ms(member: Member, prefix: str) -> float:
    """The first page of a snapshot, `PAGE` keys through etcd's JSON gateway, median of 3: etcd
    visits every key from the page's start to the range's end, to count them."""
    key = prefix.encode()
    body = {"key": b64encode(key).decode(), "range_end": b64encode(key[:-1] + b"0").decode(), "limit": PAGE}
    times = []
    with httpx.Client(base_url=f"http://{member.endpoint}", timeout=60) as http:
        for _ in range(3):
            started = time.perf_counter()
            http.post("/v3/kv/range", json=body).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class Started(msgspec.Struct):
    server: Server
    healthy_s: float  # until /healthz answers: the registry is loaded before the worker serves
    serving_s: float  # until the first page of llm answers and /v1/server counts every instance
    rss_mb: float
    peak_mb: float


def _start(root: Path, url: str, count: int) -> Started:
    """A fresh server on `url`, timed from its process's start until it serves all `count` instances."""
    data = Path(tempfile.mkdtemp(prefix="server-", dir=root)) / "data"
    server = Server(data, cpus=SERVER_CPU, args=("--store", url))
    started = time.perf_counter()
    try:
        server.start()
    except RuntimeError:
        if server.process is None or server.process.poll() is not None:
            raise
        # Server waits 20 s for /healthz; a big registry is still loading: wait for it here.
        while True:
            try:
                if server.http.get("/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
            if server.process.poll() is not None or time.perf_counter() - started > 900:
                server.stop()
                last = Path(server.log.name).read_text().strip().splitlines()[-1:]
                raise RuntimeError(f"{' '.join(last)} (see {server.log.name})") from None
    healthy = time.perf_counter() - started
    page = server.http.get("/v1/services/llm", params={"limit": 1})
    page.raise_for_status()
    assert len(page.json()) == min(count, 1), page.text
    held = server.http.get("/v1/server").json()["instances"]
    assert held == count, f"the server holds {held} instances of {count}"
    serving = time.perf_counter() - started
    worker = server.worker_pid()
    return Started(server, healthy, serving, rss_mb(worker), _peak_mb(worker))


def million(args: argparse.Namespace) -> None:
    os.environ["ETCD_QUOTA_BACKEND_BYTES"] = str(QUOTA)  # the member reads its flags from ETCD_* too
    cluster = EtcdCluster(1, in_memory=False, cpus=LOAD_CPU)
    cluster.start()
    root = Path(tempfile.mkdtemp(prefix="swarm-bench-million-"))
    url, prefix, member = cluster.url("million"), "/million/", cluster.members[0]
    try:
        empty = _start(root, url, 0)
        empty.server.stop()
        print(
            f"a server on no instances: serves after {empty.serving_s:.1f} s, worker RSS {empty.rss_mb:.0f} MB; "
            f"etcd on core {LOAD_CPU} (data on disk), servers on core {SERVER_CPU}; "
            f"records of about {len(STORED)} bytes, over {SERVICES} services"
        )
        print(
            f"{'instances':>10} {'put/s':>7} {'etcd db MB':>10} {'page ms':>7} {'':3} {'healthz s':>9} "
            f"{'serving s':>9} {'RSS MB':>7} {'peak MB':>7} {'B/inst':>7} {'peak B/inst':>11} {'A RSS MB':>8}"
        )
        loaded = 0
        for count in sorted(args.instances):
            rate, loaded = (count - loaded) / asyncio.run(_fill(member.endpoint, prefix, loaded, count)), count
            status = member.status()
            db_mb = int(status["dbSize"]) / 2**20 if status else float("nan")
            etcd = f"{rate:>7.0f} {db_mb:>10.0f} {_page_ms(member, prefix):>7.0f}"
            try:
                a = _start(root, url, count)
            except RuntimeError as exc:  # larger sizes would not start either
                print(f"{count:>10} {etcd} A   did not start: {exc}")
                break
            try:
                b = _start(root, url, count)  # the first one is serving meanwhile: both share the member
                a_rss = rss_mb(a.server.worker_pid())
                b.server.stop(within=60)
            finally:
                a.server.stop(within=60)
            for label, run, first in (("A", a, etcd), ("B", b, f"{'':>7} {'':>10} {'':>7}")):
                per = (run.rss_mb - empty.rss_mb) * 2**20 / count
                peak = (run.peak_mb - empty.rss_mb) * 2**20 / count
                print(
                    f"{count if label == 'A' else '':>10} {first} {label:3} {run.healthy_s:>9.1f} {run.serving_s:>9.1f}"
                    f" {run.rss_mb:>7.0f} {run.peak_mb:>7.0f} {per:>7.0f} {peak:>11.0f}"
                    f" {f'{a_rss:.0f}' if label == 'B' else '':>8}"
                )
    finally:
        cluster.stop()


PARTS = ("registrations", "latency", "reads", "million")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, action="append", help="the parts to run (every part by default)")
    parser.add_argument("--seconds", type=int, default=5, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=300, help="writes timed to the watcher")
    parser.add_argument(
        "--instances", type=int, nargs="+", default=[1_000_000], help="sizes loaded in turn for the million part"
    )
    args = parser.parse_args()
    parts = args.part or PARTS
    if {"registrations", "latency", "reads"} & set(parts):
        cluster = EtcdCluster(1, in_memory=False, cpus=SERVER_CPU)
        cluster.start()
        try:
            if "registrations" in parts:
                registrations(args, cluster)
            if "latency" in parts:
                watcher_latency(args, cluster)
            if "reads" in parts:
                reads(args, cluster)
        finally:
            cluster.stop()
    if "million" in parts:
        million(args)


if __name__ == "__main__":
    main()
