"""Handlers about the server itself: info, liveness, metrics and the OpenAPI document."""

from __future__ import annotations

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..records import ServerInfo
from ..telemetry import INDEX, INSTANCES, NODES, REGISTRY, WATCHERS
from .reads import IndexedJSON, registry_of

_encode = msgspec.json.Encoder().encode


async def server_info(request: Request) -> Response:
    registry = registry_of(request)
    info = ServerInfo(
        version=__version__,
        store=registry.store.name,
        data_dir=registry.store.location,
        index=registry.index,
        instances=registry.instance_count,
        nodes=registry.node_count,
        watchers=int(WATCHERS._value.get()),
        active_checks=len(registry.health.scheduler),
        expiry_protection=registry.health.guard.active,
    )
    return IndexedJSON(_encode(info), registry.index)


async def healthz(request: Request) -> Response:
    return IndexedJSON(b'{"status":"ok"}', registry_of(request).index)


async def metrics(request: Request) -> Response:
    registry = registry_of(request)
    for health, count in registry.counts().items():
        INSTANCES.labels(health).set(count)
    NODES.set(registry.node_count)
    INDEX.set(registry.index)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")
