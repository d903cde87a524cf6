"""Running the gateway: its own HTTP/1.1 server (`front.py`) on uvloop, one process, on a listener bound here.

Not granian, which `swarm serve` uses: a proxy must be able to cut an answer off (granian ends a
chunked stream cleanly whatever the handler does, so a broken upstream would look complete to
the client), to wait for a slow client before reading more from the instance (granian's stream
transport queues without bound), and to hear that a client left (the front cancels the handler,
and with it the upstream request).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys

import uvloop

from ..server import BACKLOG, listen
from .app import Gateway, serve_forever
from .front import Front
from .registry import RegistryClient
from .settings import Routes

KEEPALIVE = 75.0  # seconds an idle client connection is kept
GC_YOUNG = 20_000  # allocations between young collections (the default, 700, is a few requests)


def serve(
    host: str,
    port: int,
    routes: Routes,
    addr: str | None = None,
    max_services: int = 512,
    max_in_flight: int = 4096,
) -> None:
    """Serve until SIGINT or SIGTERM; `CannotServe` before anything starts if the address cannot be had."""
    listener = listen(host, port, "--listen", "swarm gateway")
    uvloop.run(_main(listener, host, port, routes, addr, max_services, max_in_flight))


async def _main(
    listener: socket.socket,
    host: str,
    port: int,
    routes: Routes,
    addr: str | None,
    max_services: int,
    max_in_flight: int,
) -> None:
    loop = asyncio.get_running_loop()
    client = RegistryClient(addr)
    gateway = Gateway(routes, client, max_services, max_in_flight)
    front = Front(gateway.handle, loop, KEEPALIVE)
    listening = await loop.create_server(front, sock=listener, backlog=BACKLOG)
    # Each request allocates a few dozen objects (the request, its task, the balancer's flow): with the
    # default thresholds a young collection runs every few requests; what startup made never goes.
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 100)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"swarm gateway: serving on http://{shown}:{port}, following the registry at {client.base_url}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await serve_forever(gateway, listening, front, stop)
    finally:
        await client.aclose()
