"""`swarm`: run the server and talk to it. SWARM_ADDR picks the server (default 127.0.0.1:8500)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..durations import format_duration, parse_duration
from ..errors import ApiError, BadRequest
from ..fronts.http.limits import Limits
from ..records import InstanceView
from ..sdk.client import Client

app = typer.Typer(
    help="Swarm Service Discovery: register GPU, storage and inference services; find them by capability.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
P = ParamSpec("P")
T = TypeVar("T")

AddrOption = Annotated[str | None, typer.Option("--addr", envvar="SWARM_ADDR", help="Server address.")]
_LIMITS = Limits()  # the defaults
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def _client(addr: str | None) -> Client:
    return Client(addr)


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)`, an error answer printed and the command failed."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        _fail(str(exc))


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"{option}: expected key=value, got {item!r}")
        pairs.append((key, value))
    return pairs


def _scalar(text: str) -> Any:
    """`80` is a number, `true` a bool, `["a"]` a list; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _check(target: str) -> dict[str, str]:
    scheme, sep, rest = target.partition("://")
    if scheme in ("http", "https"):
        return {"type": "http", "url": target}
    if sep and scheme in ("tcp", "grpc"):
        return {"type": scheme, scheme: rest}
    _fail(f"--check: expected http(s)://..., tcp://host:port or grpc://host:port[/service], got {target!r}")


@app.command()
def serve(
    http: Annotated[str, typer.Option(help="Address to serve HTTP on, HOST:PORT.")] = "127.0.0.1:8500",
    data_dir: Annotated[Path, typer.Option(help="Where the embedded store keeps its file.")] = Path("swarm-data"),
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    expiry_share: Annotated[
        float, typer.Option(help="Mass-expiry protection: hold TTL lapses when more than this share lapse together.")
    ] = 0.5,
    expiry_minimum: Annotated[
        int, typer.Option(help="... and at least this many (a lone silent instance always expires).")
    ] = 10,
    expiry_window: Annotated[str, typer.Option(help="How long a lapsed TTL waits before it expires.")] = "5s",
    expiry_owners: Annotated[
        int, typer.Option(help="... and only when the lapses span at least this many registrants.")
    ] = 3,
    ejection_base: Annotated[
        str, typer.Option(help="How long clients' reports eject a failing instance, times its ejection count.")
    ] = "30s",
    probe_allow: Annotated[
        list[str] | None,
        typer.Option(help="A network probes may reach (CIDR, or loopback, link-local, private); repeat. Default: all."),
    ] = None,
    probe_deny: Annotated[
        list[str] | None, typer.Option(help="A network probes may not reach; repeat. Deny wins over allow.")
    ] = None,
    probe_per_target: Annotated[int, typer.Option(help="Probes in flight to one host:port at most.")] = 128,
    probe_per_registrant: Annotated[int, typer.Option(help="Probes in flight for one registrant at most.")] = 256,
    probe_rate: Annotated[float, typer.Option(help="Probes a second for one registrant at most.")] = 2000.0,
    max_connections: Annotated[int, typer.Option(help="Connections served at once; more wait to be accepted.")] = (
        _LIMITS.connections
    ),
    max_long_reads: Annotated[
        int, typer.Option(help="Open blocking queries and watch streams, in all (429 past it).")
    ] = _LIMITS.long_reads,
    max_long_reads_per_client: Annotated[
        int, typer.Option(help="... from one client address.")
    ] = _LIMITS.long_reads_per_client,
    watch_buffer: Annotated[
        int, typer.Option(help="Bytes a watch stream may have sent that its client has not yet taken.")
    ] = _LIMITS.watch_buffer,
    client_timeout: Annotated[
        str,
        typer.Option(help="How long a client may take over a request head, idle, or take nothing that is sent."),
    ] = format_duration(_LIMITS.client_timeout),
) -> None:
    """Run the server on the embedded SQLite store."""
    from ..health.limits import ProbeSettings
    from ..health.protection import ExpirySettings
    from ..health.targets import networks
    from ..server import serve as run_server

    host, _, port = http.rpartition(":")
    if not host or not port.isdigit():
        _fail(f"--http: expected HOST:PORT, got {http!r}")
    try:
        window = parse_duration(expiry_window, "--expiry-window")
        ejection = parse_duration(ejection_base, "--ejection-base")
        timeout = parse_duration(client_timeout, "--client-timeout")
    except BadRequest as exc:
        _fail(exc.message)
    if not 0 < expiry_share <= 1:
        _fail("--expiry-share: must be in (0, 1]")
    for option, given in (("--probe-allow", probe_allow), ("--probe-deny", probe_deny)):
        try:
            networks(given or ())
        except ValueError as exc:
            _fail(f"{option}: {exc}")
    for option, number in (
        ("--expiry-owners", expiry_owners),
        ("--probe-per-target", probe_per_target),
        ("--probe-per-registrant", probe_per_registrant),
        ("--probe-rate", probe_rate),
    ):
        if number <= 0:
            _fail(f"{option}: must be positive")
    limits = Limits(max_connections, max_long_reads, max_long_reads_per_client, watch_buffer, timeout)
    problem = limits.problem()
    if problem is not None:
        _fail(problem)
    errors.print(f"swarm: serving on http://{host}:{port}, data in {data_dir.resolve()}")
    expiry = ExpirySettings(share=expiry_share, minimum=expiry_minimum, window=window, owners=expiry_owners)
    probes = ProbeSettings(
        per_target=probe_per_target,
        per_registrant=probe_per_registrant,
        rate=probe_rate,
        allow=tuple(probe_allow or ()),
        deny=tuple(probe_deny or ()),
        server=(host, int(port)),
    )
    run_server(
        host,
        int(port),
        str(data_dir),
        log_level=log_level,
        expiry=expiry,
        ejection_base=ejection,
        probes=probes,
        limits=limits,
    )


@app.command()
def register(
    service: Annotated[str, typer.Argument(help="Service name, e.g. llm-inference.")],
    id: Annotated[str | None, typer.Option("--id", help="Instance id (unique within the service).")] = None,
    address: Annotated[str | None, typer.Option(help="Address clients connect to.")] = None,
    port: Annotated[int | None, typer.Option(help="Port clients connect to.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag; repeat for more.")] = None,
    meta: Annotated[list[str] | None, typer.Option(help="Metadata key=value; repeat for more.")] = None,
    capability: Annotated[
        list[str] | None, typer.Option(help="A capability path=value, e.g. gpu.memory_gb=80; repeat for more.")
    ] = None,
    node: Annotated[str | None, typer.Option(help="The node (machine) this instance runs on.")] = None,
    version: Annotated[str | None, typer.Option(help="Version of the service.")] = None,
    region: Annotated[str | None, typer.Option(help="Region, e.g. eu-west.")] = None,
    zone: Annotated[str | None, typer.Option(help="Zone, e.g. eu-west-1a.")] = None,
    weight: Annotated[int | None, typer.Option(help="Relative weight for balancing (1-10000).")] = None,
    ttl: Annotated[str | None, typer.Option(help="Add a TTL check: heartbeat at least this often, e.g. 15s.")] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(
            help="Add an active check: http(s)://host:port/path, tcp://host:port, grpc://host:port "
            "or grpc://host:port/service; repeat for more."
        ),
    ] = None,
    check_interval: Annotated[str | None, typer.Option(help="Interval of the --check probes (default 10s).")] = None,
    check_timeout: Annotated[str | None, typer.Option(help="Timeout of the --check probes (default 2s).")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="Instance JSON; options override it.")] = None,
    addr: AddrOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register (or replace) an instance of SERVICE."""
    body: dict[str, Any] = {}
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            _fail(f"--file: cannot read {file}: {exc}")
    given = {"node": node, "address": address, "port": port, "version": version, "weight": weight}
    body.update({k: v for k, v in given.items() if v is not None})
    if tag:
        body["tags"] = tag
    if meta:
        body.setdefault("meta", {}).update(dict(_pairs(meta, "--meta")))
    for path, value in _pairs(capability or [], "--capability"):
        target = body.setdefault("capabilities", {})
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = _scalar(value)
    if region or zone:
        body.setdefault("location", {}).update({k: v for k, v in {"region": region, "zone": zone}.items() if v})
    if ttl:
        body.setdefault("checks", []).append({"type": "ttl", "ttl": ttl})
    timing = {k: v for k, v in {"interval": check_interval, "timeout": check_timeout}.items() if v}
    for target in check or []:
        body.setdefault("checks", []).append({**_check(target), **timing})
    iid = id or body.pop("id", None)
    if not iid:
        _fail("--id: an instance id is required (or an `id` in --file)")
    body.pop("id", None)
    with _client(addr) as client:
        view = _call(client.register, service, iid, body)
    if as_json:
        _print_json(view)
    else:
        console.print(f"registered [bold]{service}/{iid}[/bold] at {view.address}:{view.port} ({view.status})")


@app.command()
def deregister(
    service: Annotated[str, typer.Argument(help="Service name.")],
    id: Annotated[str, typer.Argument(help="Instance id.")],
    addr: AddrOption = None,
) -> None:
    """Remove an instance."""
    with _client(addr) as client:
        _call(client.deregister, service, id)
    console.print(f"deregistered [bold]{service}/{id}[/bold]")


@app.command()
def services(addr: AddrOption = None, as_json: JsonOption = False) -> None:
    """The catalog: every service with its instance and healthy counts."""
    with _client(addr) as client:
        found = _call(client.services)
    if as_json:
        _print_json(found)
        return
    table = Table("service", "instances", "healthy", "tags", "versions")
    for s in found:
        style = "green" if s.healthy == s.instances else "yellow" if s.healthy else "red"
        table.add_row(
            s.name, str(s.instances), f"[{style}]{s.healthy}[/{style}]", ", ".join(s.tags), ", ".join(s.versions)
        )
    console.print(table)


_STATUS_STYLE = {"passing": "green", "warning": "yellow", "critical": "red", "maintenance": "blue"}


def _instance_table(found: list[InstanceView]) -> Table:
    table = Table("id", "address", "status", "node", "location", "version", "tags", "capabilities", "metrics")
    for i in found:
        style = _STATUS_STYLE[i.status]
        failing = next((c.output for c in i.check_states if c.status != "passing" and c.output), "")
        if i.maintenance is not None and i.maintenance.reason:
            failing = i.maintenance.reason
        if i.ejected is not None:
            failing = f"ejected by clients' reports: {i.ejected.reason}"
        status = f"[{style}]{i.status}[/{style}]" + (f"\n{escape(failing)}" if failing else "")
        location = "/".join(p for p in (i.location.region, i.location.zone) if p) if i.location else ""
        table.add_row(
            i.id or "",
            f"{i.address}:{i.port}",
            status,
            i.node or "",
            location,
            i.version or "",
            ", ".join(i.tags),
            json.dumps(i.capabilities, separators=(",", ":")) if i.capabilities else "",
            " ".join(f"{k}={v:g}" for k, v in i.metrics.items()),
        )
    return table


@app.command()
def instances(
    service: Annotated[str, typer.Argument(help="Service name.")],
    selector: Annotated[
        str | None, typer.Option(help="CEL over instance and node, e.g. 'instance.capabilities.gpu.memory_gb >= 80'.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only instances with this tag; repeat for more.")] = None,
    all: Annotated[bool, typer.Option("--all", help="Include unhealthy instances.")] = False,
    near: Annotated[str | None, typer.Option(help="Sort by nearness to a region, zone or lat,lon.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    addr: AddrOption = None,
    as_json: JsonOption = False,
) -> None:
    """Instances of SERVICE: healthy ones unless --all."""
    with _client(addr) as client:
        found = _call(client.instances, service, selector=selector, tags=tag, all=all, near=near, limit=limit)
    if as_json:
        _print_json(found)
    else:
        console.print(_instance_table(found))


@app.command()
def nodes(
    selector: Annotated[str | None, typer.Option(help="CEL over node, e.g. 'node.resources.cpu_cores >= 32'.")] = None,
    kind: Annotated[str | None, typer.Option(help="compute, storage or network.")] = None,
    addr: AddrOption = None,
    as_json: JsonOption = False,
) -> None:
    """Nodes: the machines instances run on."""
    with _client(addr) as client:
        found = _call(client.nodes, selector=selector, kind=kind)
    if as_json:
        _print_json(found)
        return
    table = Table("id", "kind", "address", "location", "gpus", "cpu", "memory GB", "storage GB")
    for n in found:
        gpus = ", ".join(f"{g.count}x {g.model} {g.memory_gb:g}GB" for g in n.resources.gpus)
        location = "/".join(p for p in (n.location.region, n.location.zone) if p) if n.location else ""
        r = n.resources
        table.add_row(
            n.id or "",
            n.kind,
            n.address or "",
            location,
            gpus,
            str(r.cpu_cores or ""),
            f"{r.memory_gb:g}" if r.memory_gb else "",
            f"{r.storage_gb:g}" if r.storage_gb else "",
        )
    console.print(table)


@app.command()
def watch(
    service: Annotated[str, typer.Argument(help="Service name.")],
    selector: Annotated[str | None, typer.Option(help="Only instances matching this CEL expression.")] = None,
    all: Annotated[bool, typer.Option("--all", help="Include unhealthy instances.")] = False,
    addr: AddrOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow SERVICE: print its instances, then every change as it happens (Ctrl-C stops)."""
    with _client(addr) as client:
        try:
            for event in _call(client.events, service, selector=selector, all=all):
                if as_json:
                    sys.stdout.write(
                        json.dumps({"event": event.event, "index": event.index, "data": json.loads(event.data)}) + "\n"
                    )
                    sys.stdout.flush()
                elif event.event == "snapshot":
                    found = msgspec.json.decode(event.data, type=list[InstanceView])
                    console.print(f"[bold]{service}[/bold]: {len(found)} instance(s) at index {event.index}")
                    console.print(_instance_table(found))
                elif event.event == "put":
                    i = msgspec.json.decode(event.data, type=InstanceView)
                    style = _STATUS_STYLE[i.status]
                    console.print(
                        f"{time.strftime('%H:%M:%S')} [{event.index}] put {i.id} {i.address}:{i.port} "
                        f"[{style}]{i.status}[/{style}]"
                    )
                else:
                    gone = json.loads(event.data)
                    console.print(f"{time.strftime('%H:%M:%S')} [{event.index}] delete {gone['id']}")
        except ApiError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            pass


@app.command()
def checks(
    service: Annotated[str, typer.Argument(help="Service name.")],
    id: Annotated[str, typer.Argument(help="Instance id.")],
    addr: AddrOption = None,
    as_json: JsonOption = False,
) -> None:
    """The checks of one instance: status, last output, when, how long, consecutive counts."""
    with _client(addr) as client:
        found = _call(client.checks, service, id)
    if as_json:
        _print_json(found)
        return
    table = Table("check", "type", "status", "output", "checked", "took", "ok/fail in a row")
    for c in found:
        style = _STATUS_STYLE[c.status]
        checked = time.strftime("%H:%M:%S", time.localtime(c.last_checked)) if c.last_checked else "never"
        took = f"{c.duration_ms:.1f} ms" if c.duration_ms is not None else ""
        table.add_row(
            c.name,
            c.type,
            f"[{style}]{c.status}[/{style}]",
            escape(c.output),
            checked,
            took,
            f"{c.successes}/{c.failures}",
        )
    console.print(table)


@app.command()
def maintenance(
    service: Annotated[str, typer.Argument(help="Service name.")],
    id: Annotated[str, typer.Argument(help="Instance id.")],
    disable: Annotated[bool, typer.Option("--disable", help="Leave maintenance mode.")] = False,
    reason: Annotated[str, typer.Option(help="Why, shown to everyone who lists it.")] = "",
    addr: AddrOption = None,
) -> None:
    """Put an instance into maintenance mode (out of listings), or take it out with --disable."""
    with _client(addr) as client:
        view = _call(client.maintenance, service, id, not disable, reason)
    console.print(f"{service}/{id} is now [bold]{view.status}[/bold]")


@app.command()
def info(addr: AddrOption = None) -> None:
    """The server's version, store and change index."""
    with _client(addr) as client:
        _print_json(_call(client.server))
