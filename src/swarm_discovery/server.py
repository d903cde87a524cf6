"""Running the server: granian serving the ASGI app with one worker (the registry lives in memory)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from granian import Granian
from granian.constants import Interfaces
from starlette.applications import Starlette

from .api.app import Settings, create_app

_PR_SET_PDEATHSIG = 1


def worker_app() -> Starlette:
    """The app as granian's worker process builds it.

    The worker dies with the granian main process, so that `kill -9` of the server takes the
    whole server down at once instead of leaving an orphan worker holding the port and the data.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return create_app(Settings.from_env())


def serve(host: str, port: int, data_dir: str, store: str = "sqlite", log_level: str = "info") -> None:
    os.environ["SWARM_DATA_DIR"] = os.path.abspath(data_dir)
    os.environ["SWARM_STORE"] = store
    Granian(
        "swarm_discovery.server:worker_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        log_level=log_level,  # type: ignore[arg-type]
    ).serve()
