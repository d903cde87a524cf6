"""Our records in Consul's shapes.

An instance without a node is shown on the server's own node, as a service registered with a
Consul agent is shown on the agent's node. Capabilities become flattened `ServiceMeta` keys
(`cap_gpu_memory_gb: "80"`), so Consul tools (and Prometheus' `__meta_consul_service_metadata_*`)
see them. Maintenance and an ejection show as critical checks, the way Consul shows maintenance,
so a Consul client that aggregates check statuses reaches our verdict.
"""

from __future__ import annotations

import uuid
from typing import Any

from ...core.published import Published
from ...records import InstanceView, NodeView
from .shapes import AgentService, CatalogService, HealthCheck, Node, ServiceEntry, Weights

DATACENTER = "dc1"
SERVER_NODE = "swarm"
MAX_FLAT_META = 64  # Consul's own limit on meta keys
MAX_META_VALUE = 512


def node_id(name: str) -> str:
    """A stable UUID for a node name: Consul clients expect one."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.node.swarm"))


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if len(out) >= MAX_FLAT_META:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}_{key}", out)
    elif isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            out[prefix] = ",".join(_scalar(item) for item in value)[:MAX_META_VALUE]
    else:
        out[prefix] = _scalar(value)[:MAX_META_VALUE]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def service_meta(view: InstanceView) -> dict[str, str]:
    meta = dict(view.meta)
    if view.version and "version" not in meta:
        meta["version"] = view.version
    flat: dict[str, str] = {}
    _flatten(view.capabilities, "cap", flat)
    for key, value in flat.items():
        meta.setdefault(key, value)
    return meta


def agent_service(view: InstanceView) -> AgentService:
    return AgentService(
        ID=view.id or "",
        Service=view.service or "",
        Tags=view.tags,
        Meta=service_meta(view),
        Port=view.port,
        Address=view.address,
        Weights=Weights(Passing=view.weight, Warning=view.weight),
        Datacenter=DATACENTER,
        CreateIndex=view.index,
        ModifyIndex=view.index,
    )


def _node(name: str, address: str, meta: dict[str, str], index: int) -> Node:
    tagged = {"lan": address, "wan": address} if address else {}
    return Node(
        ID=node_id(name),
        Node=name,
        Address=address,
        Datacenter=DATACENTER,
        TaggedAddresses=tagged,
        Meta=meta,
        CreateIndex=index,
        ModifyIndex=index,
    )


def node_of(state: Published) -> Node:
    """The node an instance is on, from the node's record when it is registered."""
    view, node = state.view, state.node
    labels = node.get("labels") or {}
    meta = {str(k): str(v) for k, v in labels.items()}
    return _node(view.node or SERVER_NODE, str(node.get("address") or view.address), meta, view.index)


def node_view(view: NodeView) -> Node:
    return _node(view.id or "", view.address or "", dict(view.labels), view.index)


def server_node(index: int) -> Node:
    """The server's own node, where instances that name no node are shown."""
    return _node(SERVER_NODE, "127.0.0.1", {}, index)


def _check(view: InstanceView, check_id: str, name: str, status: str, **text: str) -> HealthCheck:
    return HealthCheck(
        Node=view.node or SERVER_NODE,
        CheckID=check_id,
        Name=name,
        Status=status,
        ServiceID=view.id or "",
        ServiceName=view.service or "",
        ServiceTags=view.tags,
        CreateIndex=view.index,
        ModifyIndex=view.index,
        **text,
    )


def checks(state: Published) -> list[HealthCheck]:
    """The node's serf check, then maintenance, an ejection and every check, as Consul lists them."""
    view = state.view
    serf = HealthCheck(
        Node=view.node or SERVER_NODE,
        CheckID="serfHealth",
        Name="Serf Health Status",
        Status="passing",
        CreateIndex=view.index,
        ModifyIndex=view.index,
    )
    found = [serf]
    if view.maintenance is not None:
        reason = view.maintenance.reason
        found.append(
            _check(view, f"_service_maintenance:{view.id}", "Service Maintenance Mode", "critical", Notes=reason)
        )
    if view.ejected is not None:
        reason = view.ejected.reason
        found.append(
            _check(view, f"_swarm_ejected:{view.id}", "Ejected by outlier detection", "critical", Output=reason)
        )
    for c in view.check_states:
        found.append(_check(view, c.name, c.name, c.status, Output=c.output, Type=c.type))
    return found


def service_entry(state: Published) -> ServiceEntry:
    return ServiceEntry(Node=node_of(state), Service=agent_service(state.view), Checks=checks(state))


def catalog_service(state: Published) -> CatalogService:
    view, node = state.view, node_of(state)
    return CatalogService(
        ID=node.ID,
        Node=node.Node,
        Address=node.Address,
        Datacenter=DATACENTER,
        TaggedAddresses=node.TaggedAddresses,
        NodeMeta=node.Meta,
        ServiceID=view.id or "",
        ServiceName=view.service or "",
        ServiceTags=view.tags,
        ServiceAddress=view.address,
        ServicePort=view.port,
        ServiceMeta=service_meta(view),
        ServiceWeights=Weights(Passing=view.weight, Warning=view.weight),
        CreateIndex=view.index,
        ModifyIndex=view.index,
    )
