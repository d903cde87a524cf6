"""The floor under every write: granian with an RSGI app that reads the body and answers `{}`.

No routing, no registry, no store: what serving one request through granian as `swarm serve`
runs it (RSGI, uvloop, rust tasks) costs on this machine right now. The write benchmark runs it
round by round beside our server, so that its figure can be read against the machine's speed.

python -m bench.floor --port 9000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from granian import Granian
from granian.constants import Interfaces, Loops, TaskImpl
from tests.server import free_port, granian_worker

from bench.common import SERVER_CPU, wait_until_serving


class App:
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        proto.response_bytes(200, [("content-type", "application/json")], b"{}")


app = App()


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
        wait_until_serving(self.url, self.process, "the floor")

    def worker_pid(self) -> int:
        return granian_worker(self.process.pid)

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
        interface=Interfaces.RSGI,
        workers=1,
        loop=Loops.uvloop,
        task_impl=TaskImpl.rust,
        log_level="warning",  # type: ignore[arg-type]
    ).serve()


if __name__ == "__main__":
    main()
