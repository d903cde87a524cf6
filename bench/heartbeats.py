"""A fleet heartbeating: 10,000 TTL instances, 100 watchers following the service, heartbeats
from 64 connections (wrk + Lua), round by round against the floor (bench/floor.py: granian
answering `{}` with no work at all).

Two kinds of beat: renewals that carry nothing new (they should move no index and wake nobody),
and beats whose metrics change every time (they reach watchers at most once a second per instance).
Reported: heartbeats/s and CPU per heartbeat against the floor, how often the change index moved,
and the events each watcher received per second.

    python -m bench.heartbeats [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx

from bench.common import Wrk, alternate, load, round_arguments, start_server, with_cpu
from bench.floor import Floor

WATCHERS = 100
INSTANCES = 10_000
SCRIPT = r"""
local counter = 0
local thread_id = 0
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
request = function()
  counter = counter + 1
  local body = METRICS
  return wrk.format("PUT", "/v1/services/fleet/instances/i-" .. ((counter * 7919 + tid) % INSTANCES) .. "/heartbeat",
    {["Content-Type"] = "application/json"}, body)
end
"""
RENEWAL = "'{}'"
CHANGING = "'{\"metrics\":{\"queue_depth\":' .. (counter % 97) .. '}}'"


def instance(i: int) -> tuple[str, str, dict[str, Any]]:
    return "fleet", f"i-{i}", {"address": "10.8.0.7", "port": 8000, "checks": [{"type": "ttl", "ttl": "1h"}]}


class Watchers:
    """SSE watchers of the fleet, counting the events they receive."""

    def __init__(self, url: str, count: int) -> None:
        self.events = [0] * count
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._follow, args=(url, n), daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def _follow(self, url: str, n: int) -> None:
        with httpx.stream("GET", f"{url}/v1/watch?service=fleet", timeout=httpx.Timeout(10, read=None)) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    self.events[n] += 1
                if self._stop.is_set():
                    return

    def total(self) -> int:
        return sum(self.events)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    args = round_arguments(__doc__)
    server = start_server()
    floor = Floor()
    try:
        load(server, INSTANCES, instance)
        watchers = Watchers(server.url, WATCHERS)
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/v1/server").json()["watchers"] < WATCHERS and time.monotonic() < deadline:
            time.sleep(0.1)
        wrk = Wrk(seconds=args.seconds)
        report = []
        for kind, metrics in (("renewal", RENEWAL), ("changing metrics", CHANGING)):
            script = SCRIPT.replace("METRICS", metrics).replace("INSTANCES", str(INSTANCES))
            moved, received = [], []

            def beats(script: str = script, moved: list[float] = moved, received: list[float] = received) -> Any:
                index, events, began = (
                    httpx.get(f"{server.url}/v1/server").json()["index"],
                    watchers.total(),
                    time.time(),
                )
                result = wrk.run(server.url, script)
                time.sleep(1.1)  # the last quiet changes show
                took = time.time() - began
                moved.append((httpx.get(f"{server.url}/v1/server").json()["index"] - index) / took)
                received.append((watchers.total() - events) / WATCHERS / took)
                return result

            results = alternate(
                args.rounds,
                {
                    "swarm": with_cpu(server.worker_pid(), args.seconds, beats),
                    "floor": with_cpu(
                        floor.worker_pid(), args.seconds, lambda script=script: wrk.run(floor.url, script)
                    ),
                },
            )
            report.append((kind, results, moved, received))
        watchers.stop()
    finally:
        floor.stop()
        server.stop()
    print(
        f"{INSTANCES} TTL instances, {WATCHERS} SSE watchers of the service; wrk -t1 -c64 -d{args.seconds}s"
        " heartbeats spread over the fleet, round by round with the floor; server and floor on core 0"
    )
    print(
        f"{'beats':18} {'round':>5} {'beats/s':>9} {'CPU us':>7} {'floor/s':>9} {'ratio':>6}"
        f" {'index moves/s':>14} {'events/s each':>14}"
    )
    for kind, results, moved, received in report:
        rows = zip(results["swarm"], results["floor"], moved, received, strict=True)
        for n, (ours, bare, moves, events) in enumerate(rows, 1):
            print(
                f"{kind:18} {n:>5} {ours['rps']:>9.0f} {ours['cpu_us']:>7.1f} {bare['rps']:>9.0f}"
                f" {ours['rps'] / bare['rps']:>6.2f} {moves:>14.0f} {events:>14.0f}"
            )
        ratio = statistics.median(o["rps"] / b["rps"] for o, b in zip(results["swarm"], results["floor"], strict=True))
        print(f"{kind}: median ratio to the floor {ratio:.2f}")


if __name__ == "__main__":
    main()
