"""Handlers for nodes: the machines instances run on."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequest
from ..records import NodeSpec
from ..registry import NODES
from ..selector import compile_selector
from .inputs import decode, name, read_body
from .reads import IndexedJSON, read, registry_of

_encode = msgspec.json.Encoder().encode
KINDS = ("compute", "storage", "network")


async def list_nodes(request: Request) -> Response:
    registry = registry_of(request)
    selector_text = request.query_params.get("selector")
    selector = compile_selector(selector_text) if selector_text else None
    kind = request.query_params.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return await read(request, NODES, lambda: _encode(registry.nodes(selector=selector, kind=kind)))


async def get_node(request: Request) -> Response:
    registry = registry_of(request)
    nid = name(request, "id")
    return await read(request, NODES, lambda: _encode(registry.node(nid)))


async def put_node(request: Request) -> Response:
    registry = registry_of(request)
    nid = name(request, "id")
    spec = decode(await read_body(request), NodeSpec)
    view = await registry.put_node(nid, spec)
    return IndexedJSON(_encode(view), registry.index)


async def delete_node(request: Request) -> Response:
    registry = registry_of(request)
    await registry.delete_node(name(request, "id"))
    return IndexedJSON(b'{"deleted":true}', registry.index)
