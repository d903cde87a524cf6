"""The gateway's Prometheus metrics, made at scrape time from plain counters.

Requests are counted per route (a service, or `model:NAME`), instance and status code, with
their latency and time to first byte per route. Label sets are bounded: at most MAX_SERIES
(route, instance, code) series, past which new ones count under instance `other`; routes and
instances are those the registry lists, which `--max-services` and the fleet bound. Balancer
counters (requests, retries, failures, ejections, retries refused by the budget), the view
(instances, in pool, ejected, panic, stale) and the registry's reachability are read from the
balancers and followers when scraped, never kept twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..telemetry import LATENCY_BUCKETS, RequestSeries

MAX_SERIES = 4096
_BOUNDS = [floatToGoString(b) for b in (*LATENCY_BUCKETS, math.inf)]


def _histogram(family: HistogramMetricFamily, labels: list[str], series: RequestSeries) -> None:
    family.add_metric(labels, list(zip(_BOUNDS, accumulate(series.buckets), strict=True)), series.total)


class GatewayMetrics(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, RequestSeries] = {}
        self._ttfb: dict[str, RequestSeries] = {}
        self.errors: dict[str, int] = {}  # the gateway's own answers, by reason
        self.in_flight = 0
        self._state = state  # what the fleet says at scrape time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, route: str, instance: str, code: int, seconds: float, ttfb: float | None) -> None:
        key = (route, instance, code)
        count = self._requests.get(key)
        if count is None and len(self._requests) >= MAX_SERIES:
            key = (route, "other", code)
            count = self._requests.get(key)
        self._requests[key] = (count or 0) + 1
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = RequestSeries()
        latency.observe(seconds)
        if ttfb is not None:
            first = self._ttfb.get(route)
            if first is None:
                first = self._ttfb[route] = RequestSeries()
            first.observe(ttfb)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "swarm_gateway_requests", "Requests answered", labels=["route", "instance", "code"]
        )
        for (route, instance, code), count in self._requests.items():
            requests.add_metric([route, instance, str(code)], count)
        yield requests
        latency = HistogramMetricFamily(
            "swarm_gateway_request_duration_seconds", "Time to the last byte of the answer", labels=["route"]
        )
        for route, series in self._latency.items():
            _histogram(latency, [route], series)
        yield latency
        ttfb = HistogramMetricFamily(
            "swarm_gateway_time_to_first_byte_seconds", "Time until the instance's answer began", labels=["route"]
        )
        for route, series in self._ttfb.items():
            _histogram(ttfb, [route], series)
        yield ttfb
        errors = CounterMetricFamily("swarm_gateway_errors", "The gateway's own error answers", labels=["reason"])
        for reason, count in self.errors.items():
            errors.add_metric([reason], count)
        yield errors
        yield GaugeMetricFamily("swarm_gateway_in_flight", "Requests being answered", value=self.in_flight)
        state = self._state()
        registry = GaugeMetricFamily(
            "swarm_gateway_registry_up", "1 while the registry answers, 0 while the gateway serves its last view"
        )
        registry.add_metric([], 0.0 if state["catalog_stale"] else 1.0)
        yield registry
        counters = {
            name: CounterMetricFamily(f"swarm_gateway_balancer_{name}", help_text, labels=["route"])
            for name, help_text in (
                ("requests", "Requests the balancer placed"),
                ("retries", "Attempts on another instance"),
                ("failures", "Attempts that failed"),
                ("budget_exhausted", "Retries the retry budget refused"),
                ("ejections", "Instances this gateway ejected"),
            )
        }
        gauges = {
            name: GaugeMetricFamily(f"swarm_gateway_{name}", help_text, labels=["route"])
            for name, help_text in (
                ("instances", "Instances in the route's view, healthy or not"),
                ("in_pool", "Instances the route sends to"),
                ("ejected", "Instances this gateway has ejected"),
                ("panic", "1 while too few are healthy and the route spreads over all"),
                ("stale", "1 while the route's view cannot be brought up to date"),
            )
        }
        for route, stats in state["routes"].items():
            for name, family in counters.items():
                family.add_metric([route], stats[name])
            gauges["instances"].add_metric([route], stats["instances"])
            gauges["in_pool"].add_metric([route], stats["in_pool"])
            gauges["ejected"].add_metric([route], len(stats["ejected"]))
            gauges["panic"].add_metric([route], float(stats["panic"]))
            gauges["stale"].add_metric([route], float(stats["stale"] is not None))
        yield from counters.values()
        yield from gauges.values()
