"""Handlers about the server itself: info, liveness, metrics and the OpenAPI document."""

from __future__ import annotations

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ... import __version__
from ...records import ServerInfo
from ...telemetry import INDEX, INSTANCES, NODES, REGISTRY, WATCHERS
from .call import Call, Reply, json_reply

_encode = msgspec.json.Encoder().encode


async def server_info(call: Call) -> Reply:
    registry = call.context.registry
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
    cluster = call.context.core.cluster
    if cluster is not None:
        info.id, info.peers, info.checks_here = cluster.me.id, cluster.live(), cluster.share()
        info.members = await cluster.members()
    return json_reply(_encode(info), registry.index)


async def healthz(call: Call) -> Reply:
    return json_reply(b'{"status":"ok"}', call.context.registry.index)


async def metrics(call: Call) -> Reply:
    registry = call.context.registry
    for health, count in registry.counts().items():
        INSTANCES.labels(health).set(count)
    NODES.set(registry.node_count)
    INDEX.set(registry.index)
    return Reply(generate_latest(REGISTRY), headers=[("content-type", CONTENT_TYPE_LATEST)])


async def openapi(call: Call) -> Reply:
    return Reply(call.context.openapi)
