"""Handlers for services and their instances."""

from __future__ import annotations

import msgspec

from ...core.registry import CATALOG, service_topic
from ...locality import parse_near
from ...records import Heartbeat, InstanceSpec, MaintenanceRequest, Reports
from ...selector import compile_selector
from .call import Call, Reply, json_reply
from .inputs import decode, flag, integer, name
from .reads import json_array, read

_encode = msgspec.json.Encoder().encode


async def catalog(call: Call) -> Reply:
    registry = call.context.registry
    return await read(call, CATALOG, lambda: _encode(registry.services()))


async def list_instances(call: Call) -> Reply:
    registry = call.context.registry
    service = name(call, "service")
    selector_text = call.query_params.get("selector")
    selector = compile_selector(selector_text) if selector_text else None
    near_text = call.query_params.get("near")
    near = parse_near(near_text) if near_text is not None else None
    tags = call.query_params.getlist("tag")
    include_all = flag(call, "all")
    limit = integer(call, "limit", minimum=1)

    def render() -> bytes:
        found = registry.instances(
            service, tags=tags, selector=selector, include_all=include_all, near=near, limit=limit
        )
        return json_array([state.json for state in found])

    return await read(call, service_topic(service), render)


async def get_instance(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    return await read(call, service_topic(service), lambda: registry.instance(service, iid).json)


async def reports(call: Call) -> Reply:
    registry = call.context.registry
    body = decode(await call.body(), Reports)
    return json_reply(_encode(registry.report(body)), registry.index)


async def list_checks(call: Call) -> Reply:
    """Live check state, fresher than the instance's published view (probe outputs change quietly)."""
    registry = call.context.registry
    states = registry.checks(name(call, "service"), name(call, "id"))
    return json_reply(_encode(states), registry.index)


async def register(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    spec = decode(await call.body(), InstanceSpec)
    published = await registry.register(service, iid, spec)
    return json_reply(published.json, registry.index)


async def deregister(call: Call) -> Reply:
    registry = call.context.registry
    await registry.deregister(name(call, "service"), name(call, "id"))
    return json_reply(b'{"deregistered":true}', registry.index)


async def heartbeat(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    beat = decode(await call.body(), Heartbeat, empty=Heartbeat())
    published = registry.heartbeat(service, iid, beat)
    return json_reply(published.json, registry.index)


async def maintenance(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    body = decode(await call.body(), MaintenanceRequest)
    published = await registry.set_maintenance(service, iid, body.enable, body.reason)
    return json_reply(published.json, registry.index)
