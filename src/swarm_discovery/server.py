"""Running the server: granian with one worker (the registry lives in memory), over RSGI."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys

from granian import Granian
from granian.constants import Interfaces, Loops, TaskImpl

from .core.core import Core
from .fronts.http.app import create_front, settings_from_env
from .fronts.http.rsgi import RSGIApp
from .health.protection import ExpirySettings

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_app() -> RSGIApp:
    """The app as granian's worker process builds it.

    The worker dies with the granian main process, so that `kill -9` of the server takes the
    whole server down at once instead of leaving an orphan worker holding the port and the data.
    """
    die_with_parent()
    # The registry keeps hundreds of thousands of long-lived objects; with the default thresholds
    # the collector walks all of them every few thousand allocations, which showed up as 200 ms
    # pauses under write load. Records hold no reference cycles, so collect far less often.
    gc.set_threshold(100_000, 50, 1000)
    return RSGIApp(create_front(), Core(settings_from_env()))


def serve(
    host: str,
    port: int,
    data_dir: str,
    store: str = "sqlite",
    log_level: str = "info",
    expiry: ExpirySettings | None = None,
    ejection_base: float = 30.0,
) -> None:
    expiry = expiry or ExpirySettings()
    os.environ["SWARM_EJECTION_BASE"] = f"{ejection_base}s"
    os.environ["SWARM_DATA_DIR"] = os.path.abspath(data_dir)
    os.environ["SWARM_STORE"] = store
    os.environ["SWARM_EXPIRY_SHARE"] = str(expiry.share)
    os.environ["SWARM_EXPIRY_MINIMUM"] = str(expiry.minimum)
    os.environ["SWARM_EXPIRY_WINDOW"] = f"{expiry.window}s"
    Granian(
        "swarm_discovery.server:worker_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=1,
        loop=Loops.uvloop,
        task_impl=TaskImpl.rust,
        log_level=log_level,  # type: ignore[arg-type]
    ).serve()
