"""Active checks at scale: 10,000 instances with HTTP checks every 10 s against nginx on loopback.

Reports probes/s, the scheduling lag (a probe's start minus its due time), the server's CPU per
1,000 probes/s, and how long a killed backend's instance takes to leave the listing.

    python -m bench.checks [--instances 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx

from bench.common import LOAD_CPU, Nginx, cpu_seconds, load, metric, start_server

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def lag_buckets(text: str) -> list[float]:
    return [metric(text, f'swarm_probe_lag_seconds_bucket{{le="{b}"}}') for b in LAG_BUCKETS]


def percentile_bound(before: list[float], after: list[float], q: float) -> float:
    """The smallest bucket bound under which a share `q` of the window's lags fell."""
    counts = [a - b for a, b in zip(after, before, strict=True)]
    total = counts[-1]
    for bound, cumulative in zip(LAG_BUCKETS, counts, strict=True):
        if total and cumulative / total >= q:
            return bound
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    target = Nginx(b"ok", content_type="text/plain", cpu=LOAD_CPU)
    victim = Nginx(b"ok", content_type="text/plain", cpu=LOAD_CPU)
    server = start_server()
    try:

        def instance(i: int) -> tuple[str, str, dict[str, Any]]:
            check = {"type": "http", "url": f"{target.url}?i={i}", "interval": "10s", "timeout": "2s"}
            return "probed", f"i-{i}", {"address": "127.0.0.1", "port": target.port, "checks": [check]}

        load(server, args.instances, instance)
        print(
            f"{args.instances} instances with an HTTP check every 10 s; waiting one interval for every first probe ...",
            flush=True,
        )
        time.sleep(11)
        pid = server.worker_pid()
        before_text, before_cpu, started = httpx.get(f"{server.url}/metrics").text, cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        after_text, after_cpu, elapsed = (
            httpx.get(f"{server.url}/metrics").text,
            cpu_seconds(pid),
            time.monotonic() - started,
        )
        probes = (metric(after_text, "swarm_probes_total") - metric(before_text, "swarm_probes_total")) / elapsed
        cores = (after_cpu - before_cpu) / elapsed
        p50 = percentile_bound(lag_buckets(before_text), lag_buckets(after_text), 0.50)
        p99 = percentile_bound(lag_buckets(before_text), lag_buckets(after_text), 0.99)
        passing = len(httpx.get(f"{server.url}/v1/services/probed", timeout=30).json())

        check = {"type": "http", "url": victim.url, "interval": "1s", "timeout": "1s"}
        httpx.put(
            f"{server.url}/v1/services/victim/instances/v",
            json={"address": "127.0.0.1", "port": victim.port, "checks": [check]},
        ).raise_for_status()
        while not httpx.get(f"{server.url}/v1/services/victim").json():
            time.sleep(0.05)
        victim.stop()
        killed = time.monotonic()
        index = int(httpx.get(f"{server.url}/v1/services/victim").headers["x-swarm-index"])
        while True:
            response = httpx.get(f"{server.url}/v1/services/victim", params={"index": index, "wait": "10s"}, timeout=15)
            index = int(response.headers["x-swarm-index"])
            if not response.json():
                break
        detection = time.monotonic() - killed

        print(f"server on core 0; nginx (the targets) and this script on core 1; {elapsed:.0f} s window")
        print(f"probes/s: {probes:.0f} ({passing} of {args.instances} instances passing)")
        print(f"scheduling lag: p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms (target p99 under 100 ms)")
        print(
            f"server CPU: {cores:.2f} of a core, {cores / probes * 1000:.2f} core per 1,000 probes/s "
            "(target: under half a core)"
        )
        print(
            f"detection: nginx killed -> instance out of the listing in {detection:.2f} s "
            "(interval 1 s, timeout 1 s, failures_before_critical 1)"
        )
    finally:
        server.stop()
        target.stop()


if __name__ == "__main__":
    main()
