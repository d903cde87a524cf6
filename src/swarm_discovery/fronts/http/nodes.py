"""Handlers for nodes: the machines instances run on."""

from __future__ import annotations

import msgspec

from ...core.lookup import Query
from ...errors import BadRequest
from ...records import Heartbeat, NodeSpec
from .call import Call, Reply, json_reply
from .inputs import json_body, name
from .reads import filtered_for, read

_encode = msgspec.json.Encoder().encode
KINDS = ("compute", "storage", "network")


async def list_nodes(call: Call) -> Reply:
    kind = call.query_params.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    selector = call.query_params.get("selector") or None
    return await read(call, Query("nodes", selector=selector, node_kind=kind, caller=filtered_for(call, "nodes")))


async def get_node(call: Call) -> Reply:
    return await read(call, Query("node", id=name(call, "id")))


async def put_node(call: Call) -> Reply:
    registry = call.context.registry
    nid = name(call, "id")
    spec = await json_body(call, NodeSpec)
    view = await registry.put_node(nid, spec)
    return json_reply(_encode(view), registry.index)


async def heartbeat(call: Call) -> Reply:
    registry = call.context.registry
    beat = await json_body(call, Heartbeat, empty=Heartbeat())
    view = registry.node_heartbeat(name(call, "id"), beat)
    return json_reply(_encode(view), registry.index)


async def delete_node(call: Call) -> Reply:
    registry = call.context.registry
    await registry.delete_node(name(call, "id"))
    return json_reply(b'{"deleted":true}', registry.index)
