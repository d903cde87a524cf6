"""`GET /v1/sd/prometheus`: the healthy instances as Prometheus `http_sd_configs` targets.

One target group per instance, so each carries its own labels: `__meta_swarm_service`,
`__meta_swarm_instance`, `__meta_swarm_node`, `__meta_swarm_region`, `__meta_swarm_zone`,
`__meta_swarm_version`, `__meta_swarm_tags` (",a,b,", as Prometheus' Consul discovery writes
them, so a regex can match one), `__meta_swarm_meta_<key>` and `__meta_swarm_cap_<path>` for the
capabilities (flattened as the Consul front flattens them). With `service`, the answer is a
cached `Query` like any listing; without it, every service the caller may read.
"""

from __future__ import annotations

import re
from typing import cast

import msgspec

from ...core.lookup import Found, Query
from ...core.published import Published
from ...records import checked_name
from ..consul.views import service_meta
from ..http.call import Call, Reply
from ..http.headers import json_headers
from ..http.reads import Encoding, read
from ..http.routes import Route

_encode = msgspec.json.Encoder().encode
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class TargetGroup(msgspec.Struct):
    targets: list[str]
    labels: dict[str, str]


def _label(name: str) -> str:
    return _INVALID.sub("_", name)


def target_group(state: Published) -> TargetGroup:
    view = state.view
    host = f"[{view.address}]" if ":" in view.address else view.address
    location = view.location
    labels = {
        "__meta_swarm_service": view.service or "",
        "__meta_swarm_instance": view.id or "",
        "__meta_swarm_node": view.node or "",
        "__meta_swarm_region": location.region or "" if location else "",
        "__meta_swarm_zone": location.zone or "" if location else "",
        "__meta_swarm_version": view.version or "",
        "__meta_swarm_status": view.status,
        "__meta_swarm_tags": f",{','.join(view.tags)}," if view.tags else "",
    }
    for key, value in service_meta(view).items():
        kind = "cap" if key.startswith("cap_") else "meta"
        labels[_label(f"__meta_swarm_{key}" if kind == "cap" else f"__meta_swarm_meta_{key}")] = value
    return TargetGroup(targets=[f"{host}:{view.port}"], labels=labels)


def _groups(found: Found) -> bytes:
    return _encode([target_group(s) for s in cast(list[Published], found.items)])


TARGETS = Encoding("prometheus-sd", _groups, json_headers)


async def targets(call: Call) -> Reply:
    params, acl, caller = call.query_params, call.context.acl, call.caller
    tags, selector = tuple(params.getlist("tag")), params.get("selector") or None
    if "service" in params:
        service = checked_name(params["service"], "service")
        acl.require(caller, "services", service, "read")
        return await read(call, Query("instances", service=service, tags=tags, selector=selector), TARGETS)
    acl.require_any(caller, "services")
    lookup, policy = call.context.lookup, caller.policy
    lookup.check(Query("instances", selector=selector))
    groups: list[TargetGroup] = []
    for summary in call.context.registry.services():
        if policy.allows("services", summary.name, "read"):
            found = await lookup.find(Query("instances", service=summary.name, tags=tags, selector=selector))
            groups.extend(target_group(s) for s in cast(list[Published], found.items))
    return Reply(_encode(groups), headers=json_headers(call.context.registry.index))


SD_ROUTES = [Route("GET", "/v1/sd/prometheus", targets, "Prometheus http_sd targets: the healthy instances")]
