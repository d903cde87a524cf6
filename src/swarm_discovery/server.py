"""Running the server: granian with one worker (the registry lives in memory), over RSGI."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import sys
from typing import Any

import granian._signals
import msgspec
from granian import Granian
from granian.constants import Interfaces, Loops, TaskImpl

from .core.core import Core
from .fronts.http.app import create_front, settings_from_env
from .fronts.http.rsgi import RSGIApp
from .health.limits import ProbeSettings
from .health.protection import ExpirySettings

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_serving: list[Core] = []  # the worker's core, for the signal handler


def _end_waits_first() -> None:
    """Make a worker's SIGINT and SIGTERM end blocking queries and watch streams before anything else.

    granian stops a worker once its open connections have ended, and a watch stream or a
    10-minute blocking query does not end by itself: without this a server with one watcher
    would not stop. Its worker installs its handlers through `set_loop_signals`, which is wrapped
    here (granian is pinned) before the worker process is forked.
    """
    install = granian._signals.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        stop = install(loop)

        def on_signal() -> None:
            for core in _serving:
                core.end_waits()
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        return stop

    granian._signals.set_loop_signals = set_loop_signals


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
    core = Core(settings_from_env())
    _serving.append(core)
    return RSGIApp(create_front(), core)


def serve(
    host: str,
    port: int,
    data_dir: str,
    store: str = "sqlite",
    log_level: str = "info",
    expiry: ExpirySettings | None = None,
    ejection_base: float = 30.0,
    probes: ProbeSettings | None = None,
) -> None:
    expiry = expiry or ExpirySettings()
    os.environ["SWARM_EJECTION_BASE"] = f"{ejection_base}s"
    os.environ["SWARM_DATA_DIR"] = os.path.abspath(data_dir)
    os.environ["SWARM_STORE"] = store
    os.environ["SWARM_EXPIRY_SHARE"] = str(expiry.share)
    os.environ["SWARM_EXPIRY_MINIMUM"] = str(expiry.minimum)
    os.environ["SWARM_EXPIRY_WINDOW"] = f"{expiry.window}s"
    os.environ["SWARM_EXPIRY_OWNERS"] = str(expiry.owners)
    os.environ["SWARM_PROBES"] = msgspec.json.encode(probes or ProbeSettings()).decode()
    _end_waits_first()
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
