"""Commands on instances: register, deregister, list, checks, maintenance, heartbeat."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import ApiError
from ..records import CheckState
from ..sdk.client import Client
from .options import (
    Addr,
    Capacity,
    CheckInterval,
    Checks,
    CheckTimeout,
    InstanceId,
    Json,
    Metrics,
    Region,
    Service,
    Zone,
    body_from,
    check_specs,
    connect,
    location,
    nested,
    numbers,
    pairs,
    part,
    seconds,
)
from .output import call, console, errors, fail, filled, print_json
from .tables import checks_table, instances_table


def register(
    service: Service,
    id: Annotated[str | None, typer.Option("--id", metavar="ID", help="Instance id, unique in the service.")] = None,
    address: Annotated[str | None, typer.Option(metavar="HOST", help="Address clients connect to.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port clients connect to.")] = None,
    tag: Annotated[list[str] | None, typer.Option(metavar="TAG", help="A tag. Repeatable.")] = None,
    meta: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="Metadata. Repeatable.")] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH=VALUE", help="A capability, e.g. gpu.memory_gb=80. Repeatable."),
    ] = None,
    node: Annotated[str | None, typer.Option(metavar="NODE", help="The node (machine) it runs on.")] = None,
    version: Annotated[str | None, typer.Option(metavar="VERSION", help="Version of the service.")] = None,
    region: Region = None,
    zone: Zone = None,
    weight: Annotated[int | None, typer.Option(metavar="1-10000", help="Relative weight for balancing.")] = None,
    capacity: Capacity = None,
    metric: Metrics = None,
    ttl: Annotated[
        str | None, typer.Option(metavar="DURATION", help="A TTL check: heartbeat at least this often, e.g. 15s.")
    ] = None,
    check: Checks = None,
    check_interval: CheckInterval = "10s",
    check_timeout: CheckTimeout = "2s",
    file: Annotated[
        Path | None, typer.Option("-f", "--file", metavar="FILE", help="Instance JSON; options override it.")
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Register (or replace) an instance of SERVICE."""
    body = body_from(file)
    given = {"node": node, "address": address, "port": port, "version": version, "weight": weight}
    body.update({k: v for k, v in given.items() if v is not None})
    if tag:
        body["tags"] = tag
    if meta:
        part(body, "meta", {}).update(dict(pairs(meta, "--meta")))
    if capability:
        nested(capability, "--capability", part(body, "capabilities", {}))
    for field, given_numbers in (("capacity", numbers(capacity, "--capacity")), ("metrics", numbers(metric))):
        if given_numbers:
            part(body, field, {}).update(given_numbers)
    if region or zone:
        part(body, "location", {}).update(location(region, zone))
    if ttl:
        part(body, "checks", []).append({"type": "ttl", "ttl": ttl})
    part(body, "checks", []).extend(check_specs(check, check_interval, check_timeout))
    iid = id or body.pop("id", None)
    if not iid:
        fail("--id: an instance id is required (or an `id` in --file)")
    body.pop("id", None)
    with connect(addr) as client:
        view = call(client.register, service, iid, body)
    if as_json:
        print_json(view)
    else:
        console.print(
            f"registered [bold]{escape(service)}/{escape(iid)}[/bold] at {view.address}:{view.port} ({view.status})"
        )


def deregister(service: Service, id: InstanceId, addr: Addr = None, as_json: Json = False) -> None:
    """Remove an instance."""
    with connect(addr) as client:
        call(client.deregister, service, id)
    if as_json:
        print_json({"service": service, "id": id, "deregistered": True})
    else:
        console.print(f"deregistered [bold]{escape(service)}/{escape(id)}[/bold]")


def _known(client: Client, service: str) -> None:
    """Fail if nothing of `service` is registered: an empty listing of a misspelt name says nothing."""
    if service not in {s.name for s in call(client.services)}:
        fail(f"no service {service!r} is registered (swarm services lists them)")


def instances(
    service: Service,
    selector: Annotated[
        str | None, typer.Option(metavar="CEL", help="e.g. 'instance.capabilities.gpu.memory_gb >= 80'.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(metavar="TAG", help="Only with this tag. Repeatable.")] = None,
    all: Annotated[bool, typer.Option("--all", help="Unhealthy instances too.")] = False,
    near: Annotated[
        str | None, typer.Option(metavar="PLACE", help="Nearest first to a region, a zone or lat,lon.")
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="At most this many.")] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Instances of SERVICE: the healthy ones, unless --all. An unknown SERVICE is an error."""
    with connect(addr) as client:
        found = call(client.instances, service, selector=selector, tags=tag, all=all, near=near, limit=limit)
        if not found:
            _known(client, service)
    if as_json:
        print_json(found)
    else:
        console.print(instances_table(found, console.width))


def checks(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE", help="Service name.", show_default=False)] = None,
    id: Annotated[str | None, typer.Argument(metavar="ID", help="Instance id.", show_default=False)] = None,
    node: Annotated[str | None, typer.Option(metavar="NODE", help="A node's checks instead.")] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """The checks of instance ID of SERVICE (and of its node), or of a --node.

    For each: status, last output, when it last ran, how long it took, results in a row.
    """
    if (service is None or id is None) == (node is None):
        fail("give SERVICE and ID, or --node NODE")
    with connect(addr) as client:
        found: list[tuple[str | None, CheckState]] = []
        if service is not None and id is not None:
            # The live state: an instance's view carries its checks' outputs as of its last status change.
            found = [(None, c) for c in call(client.checks, service, id)]
            node = call(client.instance, service, id).node
        if node is not None:
            found += [(node, c) for c in _node_checks(client, node, required=not found and service is None)]
    if as_json:
        print_json([{**filled(c), **({"node": owner} if owner else {})} for owner, c in found])
    else:
        console.print(checks_table(found, console.width))


def _node_checks(client: Client, node: str, required: bool) -> tuple[CheckState, ...]:
    """The node's checks; none if an instance names a node that is not registered."""
    try:
        return client.node(node).check_states
    except ApiError as exc:
        if required or exc.status_code != 404:
            fail(str(exc))
        return ()


def maintenance(
    service: Service,
    id: InstanceId,
    disable: Annotated[bool, typer.Option("--disable", help="Leave maintenance mode.")] = False,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, shown to everyone who lists it.")] = "",
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Take an instance out of listings (maintenance mode), or put it back with --disable."""
    with connect(addr) as client:
        view = call(client.maintenance, service, id, not disable, reason)
    if as_json:
        print_json(view)
    else:
        console.print(f"{escape(service)}/{escape(id)} is now [bold]{view.status}[/bold]")


def heartbeat(
    service: Service,
    id: InstanceId,
    metric: Metrics = None,
    every: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Keep heartbeating this often until Ctrl-C.")
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Renew the TTL checks of an instance, once or --every so often, with its metrics."""
    metrics = numbers(metric)
    with connect(addr) as client:
        if every is None:
            view = call(client.heartbeat, service, id, metrics=metrics)
            if as_json:
                print_json(view)
            else:
                console.print(f"renewed [bold]{escape(service)}/{escape(id)}[/bold] ({view.status})")
            return
        period = seconds(every, "--every")
        if period <= 0:
            fail("--every: must be positive")
        with call(client.keep_alive(service, id, every=period, metrics=metrics).start):
            errors.print(f"swarm: heartbeating {escape(service)}/{escape(id)} every {every} (Ctrl-C stops)")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
