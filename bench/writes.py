"""Registrations: acknowledged, durable PUTs per second from 64 concurrent clients (wrk + Lua).

Every acknowledged registration is checked after `kill -9` and a restart. In the same run, the
same requests go to the floor (bench/floor.py: granian answering `{}` with no work at all), which
shows how fast the machine is right now: on this shared machine the floor itself moves by a
quarter between runs.

    python -m bench.writes [--seconds 10]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import httpx
from tests.server import free_port

from bench.common import SERVER_CPU, Wrk, start_server

# Each connection registers its own run of ids; the body is a typical GPU inference instance.
SCRIPT = r"""
local counter = 0
local thread_id = 0
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
local body = '{"address":"10.8.0.7","port":8000,"version":"1.4.2","tags":["vllm"],' ..
  '"location":{"region":"eu-west","zone":"eu-west-1a"},' ..
  '"capabilities":{"gpu":{"model":"H100","memory_gb":80,"count":8}},"metrics":{"queue_depth":3}}'
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/services/llm/instances/i-" .. tid .. "-" .. counter,
    {["Content-Type"] = "application/json"}, body)
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    server = start_server()
    try:
        result = Wrk(seconds=args.seconds).run(server.url, SCRIPT)
        metrics = httpx.get(f"{server.url}/metrics").text
        batches = float(re.search(r"swarm_store_commit_batch_size_count ([\d.e+]+)", metrics).group(1))  # type: ignore[union-attr]
        writes = float(re.search(r"swarm_store_commit_batch_size_sum ([\d.e+]+)", metrics).group(1))  # type: ignore[union-attr]
        before = httpx.get(f"{server.url}/v1/server").json()["instances"]
        server.kill()
        server.start()
        after = httpx.get(f"{server.url}/v1/server", timeout=60).json()["instances"]
        print(
            f"wrk -t1 -c64 -d{args.seconds}s PUT /v1/services/llm/instances/<new id>; server on core 0, wrk on core 1"
        )
        print(
            f"acknowledged registrations/s: {result['rps']:.0f} (target >= 10,000), "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, non-2xx {result['non2xx']:.0f}"
        )
        print(f"group commit: {writes:.0f} writes in {batches:.0f} commits, {writes / batches:.1f} writes per fsync")
        print(
            f"instances before kill -9: {before}, after restart: {after} "
            f"({'all kept' if after == before else 'LOST ' + str(before - after)})"
        )
    finally:
        server.stop()
    floor = floor_rps(args.seconds)
    print(
        f"floor, granian + bare ASGI app, same requests: {floor:.0f} req/s; "
        f"swarm does {result['rps'] / floor:.2f} of the floor"
    )


def floor_rps(seconds: int) -> float:
    port = free_port()
    floor = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.floor", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.put(f"http://127.0.0.1:{port}/", content=b"{}").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return Wrk(seconds=seconds).run(f"http://127.0.0.1:{port}", SCRIPT)["rps"]
    finally:
        floor.terminate()
        floor.wait()


if __name__ == "__main__":
    main()
