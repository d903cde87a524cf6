"""Handlers for services and their instances."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..locality import parse_near
from ..records import Heartbeat, InstanceSpec, MaintenanceRequest, Reports
from ..registry import CATALOG, service_topic
from ..selector import compile_selector
from .inputs import decode, flag, integer, name, read_body
from .reads import IndexedJSON, json_array, read, registry_of

_encode = msgspec.json.Encoder().encode


async def catalog(request: Request) -> Response:
    registry = registry_of(request)
    return await read(request, CATALOG, lambda: _encode(registry.services()))


async def list_instances(request: Request) -> Response:
    registry = registry_of(request)
    service = name(request, "service")
    selector_text = request.query_params.get("selector")
    selector = compile_selector(selector_text) if selector_text else None
    near_text = request.query_params.get("near")
    near = parse_near(near_text) if near_text is not None else None
    tags = request.query_params.getlist("tag")
    include_all = flag(request, "all")
    limit = integer(request, "limit", minimum=1)

    def render() -> bytes:
        found = registry.instances(
            service, tags=tags, selector=selector, include_all=include_all, near=near, limit=limit
        )
        return json_array([state.json for state in found])

    return await read(request, service_topic(service), render)


async def get_instance(request: Request) -> Response:
    registry = registry_of(request)
    service, iid = name(request, "service"), name(request, "id")
    return await read(request, service_topic(service), lambda: registry.instance(service, iid).json)


async def reports(request: Request) -> Response:
    registry = registry_of(request)
    body = decode(await read_body(request), Reports)
    return IndexedJSON(_encode(registry.report(body)), registry.index)


async def list_checks(request: Request) -> Response:
    """Live check state, fresher than the instance's published view (probe outputs change quietly)."""
    registry = registry_of(request)
    states = registry.checks(name(request, "service"), name(request, "id"))
    return IndexedJSON(_encode(states), registry.index)


async def register(request: Request) -> Response:
    registry = registry_of(request)
    service, iid = name(request, "service"), name(request, "id")
    spec = decode(await read_body(request), InstanceSpec)
    published = await registry.register(service, iid, spec)
    return IndexedJSON(published.json, registry.index)


async def deregister(request: Request) -> Response:
    registry = registry_of(request)
    await registry.deregister(name(request, "service"), name(request, "id"))
    return IndexedJSON(b'{"deregistered":true}', registry.index)


async def heartbeat(request: Request) -> Response:
    registry = registry_of(request)
    service, iid = name(request, "service"), name(request, "id")
    beat = decode(await read_body(request), Heartbeat, empty=Heartbeat())
    published = await registry.heartbeat(service, iid, beat)
    return IndexedJSON(published.json, registry.index)


async def maintenance(request: Request) -> Response:
    registry = registry_of(request)
    service, iid = name(request, "service"), name(request, "id")
    body = decode(await read_body(request), MaintenanceRequest)
    published = await registry.set_maintenance(service, iid, body.enable, body.reason)
    return IndexedJSON(published.json, registry.index)
