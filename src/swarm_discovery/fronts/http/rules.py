"""Handlers for service-wide metric rules (core/rules.py)."""

from __future__ import annotations

import msgspec

from ...records import RulesRequest
from .call import Call, Reply, json_reply
from .inputs import json_body, name

_encode = msgspec.json.Encoder().encode


async def get_rules(call: Call) -> Reply:
    registry = call.context.registry
    return json_reply(_encode(registry.rules.get(name(call, "service"))), registry.index)


async def put_rules(call: Call) -> Reply:
    registry = call.context.registry
    request = await json_body(call, RulesRequest)
    rules = await registry.rules.put(name(call, "service"), request)
    return json_reply(_encode(rules), registry.index)


async def clear_rules(call: Call) -> Reply:
    registry = call.context.registry
    await registry.rules.clear(name(call, "service"))
    return json_reply(b'{"deleted":true}', registry.index)
