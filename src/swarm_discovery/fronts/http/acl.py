"""Handlers for access control: bootstrap, and creating, listing and deleting tokens."""

from __future__ import annotations

import msgspec

from ...acl import TokenRequest
from .call import Call, Reply, json_reply
from .inputs import json_body, name

_encode = msgspec.json.Encoder().encode


async def bootstrap(call: Call) -> Reply:
    created = await call.context.acl.bootstrap()
    return json_reply(_encode(created), call.context.registry.index)


async def create_token(call: Call) -> Reply:
    request = await json_body(call, TokenRequest)
    created = await call.context.acl.create(request)
    return json_reply(_encode(created), call.context.registry.index)


async def list_tokens(call: Call) -> Reply:
    return json_reply(_encode(call.context.acl.tokens()), call.context.registry.index)


async def self_token(call: Call) -> Reply:
    return json_reply(_encode(call.context.acl.own(call.caller)), call.context.registry.index)


async def delete_token(call: Call) -> Reply:
    await call.context.acl.delete(name(call, "id"))
    return json_reply(b'{"deleted":true}', call.context.registry.index)
