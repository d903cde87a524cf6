"""Prometheus metrics, defined once; every layer records into these."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("swarm_http_requests", "HTTP requests served", ["method", "route", "code"], registry=REGISTRY)
LATENCY = Histogram(
    "swarm_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 600),
    registry=REGISTRY,
)
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
