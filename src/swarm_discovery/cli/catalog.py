"""What the server holds in general: `swarm services` and `swarm info`."""

from __future__ import annotations

from .options import Addr, Json, connect
from .output import call, console, print_json
from .tables import services_table


def services(addr: Addr = None, as_json: Json = False) -> None:
    """The catalog: every service, with its instance and healthy counts."""
    with connect(addr) as client:
        found = call(client.services)
    if as_json:
        print_json(found)
    else:
        console.print(services_table(found, console.width))


def info(addr: Addr = None, as_json: Json = False) -> None:
    """The server: version, store, change index, what it holds."""
    with connect(addr) as client:
        server = call(client.server)
    if as_json:
        print_json(server)
        return
    rows = {
        "store": f"{server.store} in {server.data_dir}" if server.data_dir else server.store,
        "index": server.index,
        "instances": server.instances,
        "nodes": server.nodes,
        "watchers": server.watchers,
        "active checks": server.active_checks,
        "expiry protection": "on: TTL lapses are held" if server.expiry_protection else "off",
    }
    console.print(f"swarm {server.version} at {client.base_url}", highlight=False)
    for label, value in rows.items():
        console.print(f"  {label:<18} {value}", highlight=False)
