"""Handlers for services and their instances."""

from __future__ import annotations

import msgspec

from ...acl.access import refuse
from ...core.lookup import Query
from ...records import Heartbeat, InstanceSpec, MaintenanceRequest, Reports
from .call import Call, Reply, json_reply
from .inputs import flag, integer, json_body, name
from .reads import filtered_for, read

_encode = msgspec.json.Encoder().encode


async def catalog(call: Call) -> Reply:
    return await read(call, Query("catalog", caller=filtered_for(call, "services")))


async def list_instances(call: Call) -> Reply:
    params = call.query_params
    query = Query(
        "instances",
        service=name(call, "service"),
        tags=tuple(params.getlist("tag")),
        selector=params.get("selector") or None,
        include_all=flag(call, "all"),
        near=params.get("near"),
        limit=integer(call, "limit", minimum=1),
    )
    return await read(call, query)


async def get_instance(call: Call) -> Reply:
    return await read(call, Query("instance", service=name(call, "service"), id=name(call, "id")))


async def reports(call: Call) -> Reply:
    """Reports count as the caller's (its token, else its address): one caller is one reporter,
    whatever it sends (balance/quorum.py); and only for services the caller may report on."""
    context, caller = call.context, call.caller
    if context.acl.enabled and not caller.policy.has_rules("reports"):
        refuse(caller, "reports")
    body = await json_body(call, Reports, json_only=True)
    allowed = [r for r in body if caller.policy.allows("reports", r.service, "write")]
    reporter = call.principal
    accepted = context.registry.report(allowed, reporter, trusted=reporter in context.core.settings.reports.trusted)
    accepted.ignored += len(body) - len(allowed)
    return json_reply(_encode(accepted), context.registry.index)


async def list_checks(call: Call) -> Reply:
    """Live check state, fresher than the instance's published view (probe outputs change quietly)."""
    registry = call.context.registry
    states = registry.checks(name(call, "service"), name(call, "id"))
    return json_reply(_encode(states), registry.index)


async def register(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    spec = await json_body(call, InstanceSpec)
    # With ACLs on, instances count against their token's cap (and probe limits), not their service's.
    published = await registry.register(service, iid, spec, registrant=call.caller.id)
    return json_reply(published.reply, registry.index)


async def deregister(call: Call) -> Reply:
    registry = call.context.registry
    await registry.deregister(name(call, "service"), name(call, "id"))
    return json_reply(b'{"deregistered":true}', registry.index)


async def heartbeat(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    beat = await json_body(call, Heartbeat, empty=Heartbeat())
    published = registry.heartbeat(service, iid, beat)
    return json_reply(published.json, registry.index)  # mostly the version the last beat was answered with


async def maintenance(call: Call) -> Reply:
    registry = call.context.registry
    service, iid = name(call, "service"), name(call, "id")
    body = await json_body(call, MaintenanceRequest)
    published = await registry.set_maintenance(service, iid, body.enable, body.reason)
    return json_reply(published.reply, registry.index)
