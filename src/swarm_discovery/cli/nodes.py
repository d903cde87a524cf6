"""Commands on nodes (machines): `swarm nodes` and `swarm node register|heartbeat|remove`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .options import (
    Addr,
    CheckInterval,
    Checks,
    CheckTimeout,
    Json,
    Metrics,
    Region,
    Zone,
    body_from,
    check_specs,
    connect,
    location,
    number,
    numbers,
    pairs,
    part,
)
from .output import answer, call, console, fail, print_json
from .tables import nodes_table

NodeId = Annotated[str, typer.Argument(metavar="ID", help="Node id, e.g. gpu-node-7.", show_default=False)]


class Kind(enum.StrEnum):
    compute = "compute"
    storage = "storage"
    network = "network"


def nodes(
    selector: Annotated[str | None, typer.Option(metavar="CEL", help="e.g. 'node.resources.cpu_cores >= 32'.")] = None,
    kind: Annotated[
        Kind | None, typer.Option(metavar="KIND", help="Only nodes of this kind: compute, storage, network.")
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Nodes: the machines instances run on, with their status and resources."""
    with connect(addr) as client:
        found = call(client.nodes, selector=selector, kind=kind.value if kind else None)
    if as_json:
        print_json(found)
    else:
        console.print(nodes_table(found, console.width))


def _gpu(text: str) -> dict[str, Any]:
    """MODEL:MEMORY_GB[:COUNT[:COMPUTE_CAPABILITY]]"""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not parts[0]:
        fail(f"--gpu: expected MODEL:MEMORY_GB[:COUNT[:COMPUTE_CAPABILITY]], e.g. H100:80:8, got {text!r}")
    gpu: dict[str, Any] = {"model": parts[0], "memory_gb": number(parts[1], "--gpu")}
    if len(parts) > 2:
        if not parts[2].isdigit():
            fail(f"--gpu: the count must be a whole number, got {parts[2]!r}")
        gpu["count"] = int(parts[2])
    if len(parts) > 3:
        gpu["compute_capability"] = parts[3]
    return gpu


def register_node(
    id: NodeId,
    kind: Annotated[
        Kind | None, typer.Option(metavar="KIND", help="compute, storage or network (compute if not given).")
    ] = None,
    address: Annotated[str | None, typer.Option(metavar="HOST", help="The node's address.")] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(metavar="MODEL:GB[:COUNT[:CC]]", help="GPUs, e.g. H100:80:8. Repeatable."),
    ] = None,
    cpus: Annotated[int | None, typer.Option(metavar="N", help="CPU cores.")] = None,
    memory_gb: Annotated[float | None, typer.Option(metavar="GB", help="Memory.")] = None,
    storage_gb: Annotated[float | None, typer.Option(metavar="GB", help="Storage.")] = None,
    storage_kind: Annotated[str | None, typer.Option(metavar="KIND", help="e.g. nvme, hdd, object.")] = None,
    bandwidth_gbps: Annotated[float | None, typer.Option(metavar="GBPS", help="Network bandwidth.")] = None,
    region: Region = None,
    zone: Zone = None,
    label: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="A label. Repeatable.")] = None,
    version: Annotated[str | None, typer.Option(metavar="VERSION", help="The node's software version.")] = None,
    check: Checks = None,
    check_interval: CheckInterval = "10s",
    check_timeout: CheckTimeout = "2s",
    file: Annotated[
        Path | None, typer.Option("-f", "--file", metavar="FILE", help="Node JSON; options override it.")
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Register (or replace) node ID. A critical node makes every instance on it critical."""
    body = body_from(file)
    body.pop("id", None)
    given = {"kind": kind.value if kind else None, "address": address, "version": version}
    body.update({k: v for k, v in given.items() if v is not None})
    resources = {
        "cpu_cores": cpus,
        "memory_gb": memory_gb,
        "storage_gb": storage_gb,
        "storage_kind": storage_kind,
        "bandwidth_gbps": bandwidth_gbps,
    }
    part(body, "resources", {}).update({k: v for k, v in resources.items() if v is not None})
    if gpu:
        body["resources"]["gpus"] = [_gpu(g) for g in gpu]
    if region or zone:
        part(body, "location", {}).update(location(region, zone))
    if label:
        part(body, "labels", {}).update(dict(pairs(label, "--label")))
    part(body, "checks", []).extend(check_specs(check, check_interval, check_timeout))
    with connect(addr) as client:
        view = call(client.put_node, id, body)
    answer(view, as_json, f"registered node [bold]{escape(id)}[/bold] ({view.kind}, {view.status})")


def node_heartbeat(
    id: NodeId,
    metric: Metrics = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Renew the TTL checks of node ID, with its metrics (its rules and its instances' judge them)."""
    with connect(addr) as client:
        view = call(client.node_heartbeat, id, metrics=numbers(metric))
    answer(view, as_json, f"renewed node [bold]{escape(id)}[/bold] ({view.status})")


def remove_node(id: NodeId, addr: Addr = None, as_json: Json = False) -> None:
    """Remove node ID."""
    with connect(addr) as client:
        call(client.delete_node, id)
    answer({"id": id, "deleted": True}, as_json, f"removed node [bold]{escape(id)}[/bold]")
