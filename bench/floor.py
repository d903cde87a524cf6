"""The floor under every write: granian with an ASGI app that reads the body and answers `{}`.

No routing, no registry, no store: what serving one request through granian's ASGI interface
costs on this machine right now. The write benchmark runs it in the same run as our server, so
that its figure can be read against how fast the machine is at that moment.

python -m bench.floor --port 9000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import httpx
from granian import Granian
from granian.constants import Interfaces, Loops, TaskImpl
from tests.server import free_port

from bench.common import SERVER_CPU


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


class Floor:
    """This app in its own granian, pinned to the server core."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.floor", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.put(self.url, content=b"{}").raise_for_status()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same settings as `swarm serve` (server.py).
    Granian(
        "bench.floor:app",
        address="127.0.0.1",
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        task_impl=TaskImpl.rust,
        log_level="warning",  # type: ignore[arg-type]
    ).serve()


if __name__ == "__main__":
    main()
