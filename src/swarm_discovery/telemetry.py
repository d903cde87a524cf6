"""Prometheus metrics, defined once; every layer records into these."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 600)


class RequestSeries:
    """Requests of one method, route and status code: a count, a latency sum and bucket counts."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1


class RequestMetrics(Collector):
    """`swarm_http_requests_total` and `swarm_http_request_duration_seconds`, made at scrape time.

    Requests are counted in plain numbers on the event loop; prometheus_client's own Counter and
    Histogram take a lock on every update, which cost more than the rest of a cached read.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, int], RequestSeries] = {}

    def series(self, method: str, route: str, status: int) -> RequestSeries:
        found = self._series.get((method, route, status))
        if found is None:
            found = self._series[(method, route, status)] = RequestSeries()
        return found

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "swarm_http_requests", "HTTP requests served", labels=["method", "route", "code"]
        )
        latency = HistogramMetricFamily(
            "swarm_http_request_duration_seconds", "HTTP request latency", labels=["method", "route"]
        )
        by_route: dict[tuple[str, str], RequestSeries] = {}
        for (method, route, status), series in list(self._series.items()):
            requests.add_metric([method, route, str(status)], series.count)
            merged = by_route.setdefault((method, route), RequestSeries())
            merged.total += series.total
            merged.buckets = [a + b for a, b in zip(merged.buckets, series.buckets, strict=True)]
        bounds = [floatToGoString(b) for b in (*LATENCY_BUCKETS, math.inf)]
        for (method, route), merged in by_route.items():
            cumulative = list(zip(bounds, accumulate(merged.buckets), strict=True))
            latency.add_metric([method, route], cumulative, merged.total)
        yield requests
        yield latency


REQUESTS = RequestMetrics()
REGISTRY.register(REQUESTS)
COMMIT_BATCH = Histogram(
    "swarm_store_commit_batch_size",
    "Writes sharing one durable commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
    registry=REGISTRY,
)
INSTANCES = Gauge("swarm_instances", "Registered instances", ["health"], registry=REGISTRY)
NODES = Gauge("swarm_nodes", "Registered nodes", registry=REGISTRY)
WATCHERS = Gauge("swarm_watchers", "Open blocking queries and watch streams", registry=REGISTRY)
INDEX = Gauge("swarm_index", "Current change index", registry=REGISTRY)
PROBES = Counter("swarm_probes", "Active health probes run", ["type", "result"], registry=REGISTRY)
PROBE_LAG = Histogram(
    "swarm_probe_lag_seconds",
    "How late a probe started after its due time",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)
EXPIRY_PROTECTION = Gauge(
    "swarm_expiry_protection", "1 while TTL expiry is suspended because too many lapsed at once", registry=REGISTRY
)
