"""Consul's read endpoints: catalog and health, blocking with `index` and `wait` as Consul's do.

Each is a `Query` for the one lookup, answered through the native front's read path (blocking,
the shared answer cache, long-read slots), only encoded in Consul's shapes and with Consul's
headers. `passing` keeps only instances whose every check passes, as Consul's does: the lookup
decides health, and its healthy listing also counts `warning` as healthy, so those are left out.
"""

from __future__ import annotations

from typing import cast

import msgspec

from ...core.lookup import Found, Query
from ...core.published import Published
from ...errors import BadRequest
from ...records import NodeView, ServiceSummary
from ..http.call import Call, Reply
from ..http.headers import JSON, Headers
from ..http.inputs import flag, name
from ..http.reads import Encoding, filtered_for, read
from .shapes import NodeServices
from .views import DATACENTER, SERVER_NODE, agent_service, catalog_service, node_view, server_node, service_entry

_encode = msgspec.json.Encoder().encode


def consul_headers(index: int) -> Headers:
    # Consul clients treat an index of 0 as "start over"; ours starts at 0 on an empty store.
    index = max(index, 1)
    return [
        ("content-type", JSON),
        ("x-consul-index", str(index)),
        ("x-consul-knownleader", "true"),
        ("x-consul-lastcontact", "0"),
        ("x-swarm-index", str(index)),
    ]


def _states(found: Found) -> list[Published]:
    return cast(list[Published], found.items)


HEALTH = Encoding("consul-health", lambda f: _encode([service_entry(s) for s in _states(f)]), consul_headers)
PASSING = Encoding(
    "consul-health-passing",
    lambda f: _encode([service_entry(s) for s in _states(f) if s.view.status == "passing"]),
    consul_headers,
)
CATALOG_SERVICE = Encoding(
    "consul-catalog", lambda f: _encode([catalog_service(s) for s in _states(f)]), consul_headers
)
CHECKS = Encoding(
    "consul-checks", lambda f: _encode([c for s in _states(f) for c in service_entry(s).Checks[1:]]), consul_headers
)
SERVICES = Encoding(
    "consul-services",
    lambda f: _encode({s.name: s.tags for s in cast(list[ServiceSummary], f.items)}),
    consul_headers,
)
NODES = Encoding(
    "consul-nodes", lambda f: _encode([node_view(n) for n in cast(list[NodeView], f.items)]), consul_headers
)


def _unsupported(call: Call, *params: str) -> None:
    """A Consul parameter that would change the answer and that we cannot honour: a 400, not a wrong answer."""
    for param in params:
        if call.query_params.get(param):
            raise BadRequest(f"{param}: not supported by swarm's Consul-compatible API")


def _instances(call: Call, include_all: bool) -> Query:
    _unsupported(call, "filter", "node-meta", "peer")
    near = call.query_params.get("near")
    return Query(
        "instances",
        service=name(call, "service"),
        tags=tuple(call.query_params.getlist("tag")),
        include_all=include_all,
        near=near if near and near != "_agent" else None,  # _agent: this agent, which is every instance's
    )


async def health_service(call: Call) -> Reply:
    passing = flag(call, "passing")
    return await read(call, _instances(call, include_all=not passing), PASSING if passing else HEALTH)


async def health_checks(call: Call) -> Reply:
    return await read(call, _instances(call, include_all=True), CHECKS)


async def catalog_service_(call: Call) -> Reply:
    return await read(call, _instances(call, include_all=True), CATALOG_SERVICE)


async def catalog_services(call: Call) -> Reply:
    _unsupported(call, "filter", "node-meta")
    return await read(call, Query("catalog", caller=filtered_for(call, "services")), SERVICES)


async def catalog_nodes(call: Call) -> Reply:
    _unsupported(call, "filter", "node-meta", "near")
    return await read(call, Query("nodes", caller=filtered_for(call, "nodes")), NODES)


async def catalog_node(call: Call) -> Reply:
    """A node with the instances on it; the server's own node holds the instances that name none."""
    registry, policy = call.context.registry, call.caller.policy
    nid = name(call, "id")
    if nid == SERVER_NODE:
        services = [s.name for s in registry.services()]
        states = [p for s in services for p in registry.published(s) if p.view.node is None]
        node = server_node(registry.index)
    else:
        node = node_view(registry.node(nid))
        states = [p for s in registry.services_on(nid) for p in registry.published(s) if p.view.node == nid]
    shown = {
        p.view.id or "": agent_service(p.view)
        for p in states
        if policy.allows("services", p.view.service or "", "read")
    }
    return Reply(_encode(NodeServices(Node=node, Services=shown)), headers=consul_headers(registry.index))


async def datacenters(call: Call) -> Reply:
    return Reply(_encode([DATACENTER]), headers=consul_headers(call.context.registry.index))
