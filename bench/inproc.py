"""One registration's cost inside the server process, without granian or the network.

The app is driven over RSGI as `swarm serve` runs it, by 64 concurrent callers; the RSGI scope and
protocol are stand-ins for granian's (a body to read, a place to put the answer). The store is the
real SQLite store with its fsyncs. Printed: CPU per registration (all threads), objects the garbage
collector tracks per registered instance, and the pause of a full collection at the end. Pinned to
the server's core.

    python -m bench.inproc [--writes 100000] [--settle SECONDS]

For deterministic figures, count instructions under callgrind with `--callgrind`, which switches
its instrumentation on for the measured registrations alone (`callgrind_control -i on/off`):
    valgrind --tool=callgrind --instr-atstart=no python -m bench.inproc --writes 3000 --callgrind
and divide the "Collected" count it ends with by the registrations measured (2,700 here); the
work before and after (imports, start, warm-up, stop) is left out. `--warm 30000` measures the
`--writes` after 30,000 others, where bench.writes spends its rounds (some costs, such as keeping
encodings within their budget, only show past 25,000 instances). Without `--callgrind`, run two
sizes and divide the difference by the difference in writes, with `--settle` so that the server's
timed work (the first health sweep, the imports it makes) has run before the registrations in
both: `--settle 5 --writes 500` and `--writes 2500`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import tempfile
import time

import uvloop

from bench.common import SERVER_CPU, WRITE_RATE
from swarm_discovery.core.core import Core, CoreSettings
from swarm_discovery.core.quotas import Quotas
from swarm_discovery.fronts.http.app import create_front
from swarm_discovery.fronts.http.limits import Limits
from swarm_discovery.fronts.http.rsgi import RSGIApp

BODY = (
    b'{"address":"10.8.0.7","port":8000,"version":"1.4.2","tags":["vllm"],'
    b'"location":{"region":"eu-west","zone":"eu-west-1a"},'
    b'"capabilities":{"gpu":{"model":"H100","memory_gb":80,"count":8}},"metrics":{"queue_depth":3}}'
)


class Scope:
    proto = "http"
    http_version = "1.1"
    method = "PUT"
    scheme = "http"
    query_string = ""
    client = "127.0.0.1:40000"
    server = "127.0.0.1:8500"

    def __init__(self, path: str) -> None:
        self.path = path
        self.headers = {"host": "127.0.0.1:8500", "content-type": "application/json", "content-length": str(len(BODY))}


class Proto:
    def __init__(self) -> None:
        self.status = 0

    async def __call__(self) -> bytes:
        return BODY

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status


async def register(app: RSGIApp, ids: range, callers: int = 64) -> None:
    pending = iter(ids)

    async def caller() -> None:
        for i in pending:
            proto = Proto()
            await app.__rsgi__(Scope(f"/v1/services/llm/instances/i-{i}"), proto)  # type: ignore[arg-type]
            if proto.status != 200:
                raise RuntimeError(f"registration {i} answered {proto.status}")

    await asyncio.gather(*(caller() for _ in range(callers)))


def _callgrind(state: str) -> None:
    """Callgrind's instrumentation on or off, for this process (run with --instr-atstart=no)."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


async def run(writes: int, settle: float = 0.0, callgrind: bool = False, warm: int | None = None) -> None:
    gc.set_threshold(100_000, 50, 1000)  # as the server sets it
    # Lifted caps, as bench.writes lifts them: a warm-up past 100,000 would measure quick 429s.
    quotas = Quotas(per_service=10_000_000, per_registrant=10_000_000)
    core = Core(CoreSettings(data_dir=tempfile.mkdtemp(prefix="swarm-inproc-"), quotas=quotas))
    app = RSGIApp(create_front(Limits(write_rate=WRITE_RATE)), core)
    await core.start()
    app.front.attach(core)
    await asyncio.sleep(settle)
    if warm is None:  # the first tenth, at most 1,000, warms up; the rest is measured
        warm = min(1000, writes // 10)
    else:
        writes += warm  # --writes measured after --warm others
    await register(app, range(warm))
    gc.collect()
    tracked = len(gc.get_objects())
    if callgrind:
        _callgrind("on")
    wall, cpu = time.perf_counter(), time.process_time()
    await register(app, range(warm, writes))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if callgrind:
        _callgrind("off")
    measured = writes - warm
    gc.collect()
    per_instance = (len(gc.get_objects()) - tracked) / measured
    pause = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - pause
    app.front.detach()
    await core.stop()
    print(f"{measured} registrations over RSGI in process, 64 callers, SQLite with fsync")
    print(f"  {measured / wall:.0f}/s wall, {cpu / measured * 1e6:.1f} us CPU each (every thread of this process)")
    print(f"  objects tracked by the garbage collector per registered instance: {per_instance:.1f}")
    print(f"  a full collection with {writes} instances registered: {pause * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=0.0, help="seconds to wait after the start (for callgrind)")
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions for the measured registrations alone"
    )
    parser.add_argument(
        "--warm", type=int, help="registrations before the measured ones (default: a tenth, at most 1,000)"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(SERVER_CPU)})  # the server's core, as in the other benchmarks
    uvloop.run(run(args.writes, args.settle, args.callgrind, args.warm))


if __name__ == "__main__":
    main()
