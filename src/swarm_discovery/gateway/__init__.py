"""`swarm gateway`: an HTTP reverse proxy driven by the registry, for clients that do not embed the SDK.

It routes by service (`/SERVICE/PATH`, `Host: SERVICE.swarm`) and, on the OpenAI-style paths at
its root, by model, and balances, retries and ejects with `balance.BalancerCore`, the SDK
balancer's core (no second implementation). The modules, one job each:

    settings.py  routes from flags and a TOML or JSON file
    registry.py  following the registry: the catalog, each service's change stream
    fleet.py     the view: followed services, their backends, the model index
    backend.py   one route's BalancerCore, and the admission queue for saturated backends
    app.py       the request handler: which backend, the gateway's own paths
    proxy.py     one request passed on: attempts, retries, streaming both ways
    upstream.py  keep-alive HTTP/1.1 connections to instances, pooled
    wire.py      HTTP/1.1 heads and chunked bodies
    models.py    the OpenAI-style paths: the model, the prompt, /v1/models
    scrape.py    model servers' own load metrics (vLLM's /metrics)
    reports.py   outcomes reported to the registry (passive health)
    metrics.py   /metrics
    errors.py    the gateway's own error answers
    front.py     the HTTP/1.1 server clients talk to (httptools' parser)
    serve.py     the front on uvloop, on a listener bound once
"""

from __future__ import annotations

from .app import Gateway
from .settings import Route, Routes, RoutesError, load_routes

__all__ = ["Gateway", "Route", "Routes", "RoutesError", "load_routes"]
