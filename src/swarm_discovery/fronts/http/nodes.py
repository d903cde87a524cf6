"""Handlers for nodes: the machines instances run on."""

from __future__ import annotations

import msgspec

from ...core.registry import NODES
from ...errors import BadRequest
from ...records import NodeSpec
from ...selector import compile_selector
from .call import Call, Reply, json_reply
from .inputs import decode, name
from .reads import read

_encode = msgspec.json.Encoder().encode
KINDS = ("compute", "storage", "network")


async def list_nodes(call: Call) -> Reply:
    registry = call.context.registry
    selector_text = call.query_params.get("selector")
    selector = compile_selector(selector_text) if selector_text else None
    kind = call.query_params.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return await read(call, NODES, lambda: _encode(registry.nodes(selector=selector, kind=kind)))


async def get_node(call: Call) -> Reply:
    registry = call.context.registry
    nid = name(call, "id")
    return await read(call, NODES, lambda: _encode(registry.node(nid)))


async def put_node(call: Call) -> Reply:
    registry = call.context.registry
    nid = name(call, "id")
    spec = decode(await call.body(), NodeSpec)
    view = await registry.put_node(nid, spec)
    return json_reply(_encode(view), registry.index)


async def delete_node(call: Call) -> Reply:
    registry = call.context.registry
    await registry.delete_node(name(call, "id"))
    return json_reply(b'{"deleted":true}', registry.index)
