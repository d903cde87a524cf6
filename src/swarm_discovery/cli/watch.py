"""`swarm watch`: a service's instances, then each change as it happens, across server restarts."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
import typer
from rich.markup import escape

from ..errors import ApiError
from ..records import InstanceView, Left
from ..sdk.client import WatchEvent
from .options import Addr, Json, Service, connect
from .output import console, fail, print_json, status_text
from .tables import instances_table

_snapshot = msgspec.json.Decoder(list[InstanceView])
_put = msgspec.json.Decoder(InstanceView)


_delete = msgspec.json.Decoder(Left)


def _decoded(event: WatchEvent) -> list[InstanceView] | InstanceView | Left:
    if event.event == "snapshot":
        return _snapshot.decode(event.data)
    return _put.decode(event.data) if event.event == "put" else _delete.decode(event.data)


def _print(service: str, event: WatchEvent) -> None:
    data = _decoded(event)
    now = time.strftime("%H:%M:%S")
    if isinstance(data, list):
        console.print(f"[bold]{escape(service)}[/bold]: {len(data)} instance(s) at index {event.index}")
        console.print(instances_table(data, console.width))
    elif isinstance(data, InstanceView):
        line = f"{now} [{event.index}] put {escape(data.id or '')} {data.address}:{data.port} "
        console.print(line + status_text(data.status).markup)
    else:
        console.print(f"{now} [{event.index}] delete {escape(data.id)} ({data.reason})")


def watch(
    service: Service,
    selector: Annotated[str | None, typer.Option(metavar="CEL", help="Only instances that match.")] = None,
    all: Annotated[bool, typer.Option("--all", help="Unhealthy instances too.")] = False,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Follow SERVICE: its instances, then every change (Ctrl-C stops).

    If the server goes away, it says so, reconnects and goes on from where it was.
    With --json, one event a line: {"event": snapshot|put|delete, "index", "data"}.
    """
    with connect(addr) as client:
        try:
            for event in client.events(service, selector=selector, all=all):
                if as_json:
                    print_json({"event": event.event, "index": event.index, "data": _decoded(event)})
                else:
                    _print(service, event)
        except ApiError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            pass
