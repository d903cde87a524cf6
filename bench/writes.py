"""Registrations: acknowledged, durable PUTs per second from 64 concurrent clients (wrk + Lua).

Every acknowledged registration is checked after `kill -9` and a restart. Round by round, the
same requests also go to the floor (bench/floor.py: granian answering `{}` with no work at all),
which shows how fast the machine is at that moment: on this shared machine it drifts by a quarter.

    python -m bench.writes [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import re
import statistics

import httpx

from bench.common import Wrk, alternate, round_arguments, start_server, with_cpu
from bench.floor import Floor

# Every request registers a new id (ROUND is the round's number); the body is a typical GPU inference instance.
SCRIPT = r"""
local counter = 0
local thread_id = 0
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
local body = '{"address":"10.8.0.7","port":8000,"version":"1.4.2","tags":["vllm"],' ..
  '"location":{"region":"eu-west","zone":"eu-west-1a"},' ..
  '"capabilities":{"gpu":{"model":"H100","memory_gb":80,"count":8}},"metrics":{"queue_depth":3}}'
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/services/llm/instances/i-ROUND-" .. tid .. "-" .. counter,
    {["Content-Type"] = "application/json"}, body)
end
"""


def main() -> None:
    args = round_arguments(__doc__)
    # Rounds of 64 connections register more than the per-service cap of 100,000: lifted, or the
    # last rounds measure quick 429s.
    server = start_server(
        args=("--max-instances-per-service", "10000000", "--max-instances-per-registrant", "10000000")
    )
    floor = Floor()
    try:
        wrk, rounds = Wrk(seconds=args.seconds), iter(range(args.rounds))
        results = alternate(
            args.rounds,
            {
                "swarm": with_cpu(
                    server.worker_pid(),
                    args.seconds,
                    lambda: wrk.run(server.url, SCRIPT.replace("ROUND", str(next(rounds)))),
                ),
                "floor": with_cpu(floor.worker_pid(), args.seconds, lambda: wrk.run(floor.url, SCRIPT)),
            },
        )
        metrics = httpx.get(f"{server.url}/metrics").text
        batches = float(re.search(r"swarm_store_commit_batch_size_count ([\d.e+]+)", metrics).group(1))  # type: ignore[union-attr]
        writes = float(re.search(r"swarm_store_commit_batch_size_sum ([\d.e+]+)", metrics).group(1))  # type: ignore[union-attr]
        before = httpx.get(f"{server.url}/v1/server").json()["instances"]
        server.kill()
        server.start()
        after = httpx.get(f"{server.url}/v1/server", timeout=60).json()["instances"]
    finally:
        floor.stop()
        server.stop()
    print(
        f"wrk -t1 -c64 -d{args.seconds}s PUT /v1/services/llm/instances/<new id>, {args.rounds} rounds of swarm "
        f"then the floor (granian + a bare RSGI app answering {{}}); each on core 0, wrk on core 1"
    )
    print(
        f"{'round':8} {'swarm req/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}"
        f" {'floor req/s':>12} {'CPU us/req':>11} {'ratio':>6}"
    )
    for n, (ours, bare) in enumerate(zip(results["swarm"], results["floor"], strict=True), 1):
        print(
            f"{n:<8} {ours['rps']:>12.0f} {ours['p50_ms']:>8.2f} {ours['p99_ms']:>8.2f} {ours['non2xx']:>8.0f}"
            f" {ours['cpu_us']:>11.1f} {bare['rps']:>12.0f} {bare['cpu_us']:>11.1f} {ours['rps'] / bare['rps']:>6.2f}"
        )
    median = statistics.median(r["rps"] for r in results["swarm"])
    print(f"acknowledged registrations/s, median of the rounds: {median:.0f} (target >= 10,000)")
    print(f"group commit: {writes:.0f} writes in {batches:.0f} commits, {writes / batches:.1f} writes per fsync")
    print(
        f"instances before kill -9: {before}, after restart: {after} "
        f"({'all kept' if after == before else 'LOST ' + str(before - after)})"
    )


if __name__ == "__main__":
    main()
