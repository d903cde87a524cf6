"""Watch fan-out: 1,000 open SSE watchers on one service; how long until the last has a change.

Each change is a heartbeat carrying new metrics (a live update); the time runs from just before
the heartbeat is sent until the last of the 1,000 streams has read its event.

    python -m bench.watch [--watchers 1000] [--changes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time

import httpx
import uvloop

from bench.common import LOAD_CPU, start_server


async def open_watcher(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/watch?service=llm HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")  # response head
    await next_event(reader)  # the snapshot
    return reader, writer  # a writer that is garbage-collected closes its connection


async def next_event(reader: asyncio.StreamReader) -> int:
    """The `id:` of the next event; chunked framing and keepalives are skipped over."""
    while True:
        block = await reader.readuntil(b"\n\n")
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                return int(line[4:])


async def run(port: int, watchers: int, changes: int) -> tuple[list[float], int]:
    """Delays of each change to the last watcher, and how many watchers the server counted open."""
    connections = await asyncio.gather(*(open_watcher(port) for _ in range(watchers)))
    readers = [reader for reader, _ in connections]
    delays = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for n in range(changes):
            waiting = [asyncio.ensure_future(next_event(r)) for r in readers]
            await asyncio.sleep(0.05)  # every reader is parked on its socket
            started = time.perf_counter()
            response = await http.put("/v1/services/llm/instances/llm-0/heartbeat", json={"metrics": {"n": n}})
            response.raise_for_status()
            await asyncio.gather(*waiting)
            delays.append((time.perf_counter() - started) * 1000)
        watching = (await http.get("/v1/server")).json()["watchers"]  # while every stream is still open
    return delays, watching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # the server inherits it
    server = start_server()
    try:
        httpx.put(f"{server.url}/v1/services/llm/instances/llm-0", json={"address": "10.0.0.1", "port": 8000})
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        delays, watching = uvloop.run(run(server.port, args.watchers, args.changes))
        print(
            f"{args.watchers} SSE watchers on one service (server reports {watching} open), {args.changes} changes;"
            f" server on core 0, watchers on core 1"
        )
        print(
            f"time until the last watcher has the change: median {statistics.median(delays):.1f} ms, "
            f"max {max(delays):.1f} ms, min {min(delays):.1f} ms (target: median under 100 ms)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
