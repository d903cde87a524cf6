"""Running the server: granian with one worker (the registry lives in memory), over RSGI.

HTTPS with `tls`: granian terminates it; with client certificates required (`tls.client_ca`) the
worker's TLS relay does, in front of granian on a loopback port (`fronts/http/tls.py` says why).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import os
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import granian._signals
import msgspec
from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols, TaskImpl
from granian.http import HTTP1Settings
from granian.server.mp import MPServer

from .acl import AclSettings
from .balance.quorum import ReportSettings
from .core.core import Core
from .core.quotas import Quotas
from .errors import SwarmError
from .fronts.dns.listener import DnsListener
from .fronts.dns.settings import DnsSettings
from .fronts.http.app import create_front, settings_from_env
from .fronts.http.limits import Limits
from .fronts.http.rsgi import RelayedApp, RSGIApp
from .fronts.http.tls import TlsFiles
from .health.limits import ProbeSettings
from .health.protection import ExpirySettings
from .store import EtcdOptions

log = logging.getLogger("swarm")
# granian's default lets a connection buffer 400 KiB of headers; a 2,048-character selector of
# 4-byte characters, percent-encoded, takes 24 KiB of a request line.
MAX_REQUEST_HEAD = 32 * 1024
STOP_WITHIN_SECONDS = 3
BACKLOG = 1024  # connections the kernel queues beyond those served
STARTUP_FAILED = 3  # the worker's exit status when it cannot start (the reason already printed)
_SPARE_FILES = 1024  # descriptors beyond the connections: the store, probes' connections, logs

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_on_stop: list[Callable[[], None]] = []  # what the worker's signal handler calls first
_ready: list[str] = []  # what the worker prints once it serves; set before it is forked
_dns: list[DnsListener] = []  # bound before the worker is forked, served by it
# With client certificates: the public listener, granian's loopback address and the TLS context,
# for the worker's relay; set before the worker is forked.
_relayed: list[tuple[socket.socket, tuple[str, int], ssl.SSLContext]] = []


class CannotServe(SwarmError):
    """`swarm serve` cannot start: the address, the port or the data directory is unusable."""


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
            for call in _on_stop:
                call()
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
    _on_stop.append(core.end_waits)
    front = create_front(Limits.from_env())
    if not _relayed:
        return _WorkerApp(front, core)
    from .fronts.http.tls import Relay

    listener, upstream, context = _relayed[0]
    relay = Relay(listener, upstream, context, front.limits)
    _on_stop.append(relay.stop_accepting)  # granian stops taking connections at once too
    return _RelayedWorkerApp(front, core, relay)


class _WorkerApp(RSGIApp):
    """The app, which says in one line that it serves, or why it cannot.

    Only the worker knows: it opens the store (an unusable or locked data directory shows here),
    and the main process has bound the port but serves nothing itself.
    """

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            super().__rsgi_init__(loop)
            for dns in _dns:
                loop.run_until_complete(dns.start(self.core))
        except (SwarmError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(STARTUP_FAILED) from None
        print(*_ready, file=sys.stderr, flush=True)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        for dns in _dns:
            dns.stop()
        super().__rsgi_del__(loop)


class _RelayedWorkerApp(_WorkerApp, RelayedApp):
    """The worker's app behind the TLS relay."""


class _Granian(MPServer):
    """granian serving on a listener bound here, one that drops connections that take nothing.

    A client that stops reading leaves what is sent to it in the server's buffers for as long as
    the connection lives, and TCP keeps a silent-but-alive peer's connection forever (zero-window
    probes are answered). TCP_USER_TIMEOUT, which accepted connections inherit, makes the kernel
    drop it instead. On Linux granian binds a listener in each worker, out of reach, and with
    SO_REUSEPORT, so that a second server on the same port would silently share it; here it is
    bound once in the main process without it (see `listen`) and shared, as granian does on
    other systems.
    """

    def __init__(self, *args: Any, listener: socket.socket, user_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.user_timeout = user_timeout
        logging.getLogger("_granian").addFilter(self._quiet)

    def _init_shared_socket(self) -> None:
        listener = self.listener
        listener.set_inheritable(True)  # the worker is forked with it
        drop_silent_clients(listener, self.user_timeout)
        # granian's own attributes for a shared listener, as its `_init_shared_socket` sets them
        holder = SocketHolder(listener.fileno(), False, self.backlog)  # type: ignore[call-arg]
        self._shd, self._sfd, self._sso = holder, listener.fileno(), listener  # type: ignore[assignment]

    def _quiet(self, record: logging.LogRecord) -> bool:
        """Leave out what would only confuse: the task implementation is our choice, not the user's,
        and a worker that could not start has said why in one line already."""
        message = record.getMessage()
        if "task implementation" in message:
            return False
        failed = any(worker.inner.exitcode == STARTUP_FAILED for worker in self.wrks)
        return not (failed and message.startswith("Unexpected exit from worker"))


def drop_silent_clients(listener: socket.socket, timeout: float) -> None:
    """Make the connections `listener` accepts drop a client that takes nothing for `timeout`."""
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))


def listen(host: str, port: int, option: str = "--http", who: str = "swarm serve") -> socket.socket:
    """A listening socket on `host:port`, which no other process may share, or `CannotServe` naming `option`."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotServe(f"{option}: cannot serve on {host}:{port}: {exc.strerror}") from None
    family, kind, _, _, address = found[0]
    listener = socket.socket(family, kind)
    try:
        # SO_REUSEADDR lets a restart bind while old connections linger in TIME_WAIT; it does not
        # let two listeners share the port (SO_REUSEPORT would).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotServe(f"{option}: port {port} on {host} is in use (another {who}?)") from None
        raise CannotServe(f"{option}: cannot serve on {host}:{port}: {exc.strerror}") from None
    return listener


def _allow_open_files(connections: int, each: int) -> None:
    """Raise the soft limit on open files (often 1,024) as far as allowed: each connection takes `each`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections * each + _SPARE_FILES
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning(
            "at most %d open files allowed: fewer than --max-connections %d needs (%d for each connection%s)",
            hard,
            connections,
            each,
            " with client certificates" if each > 1 else "",
        )
        wanted = hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(
    host: str,
    port: int,
    data_dir: str,
    store: str = "sqlite",
    log_level: str = "info",
    expiry: ExpirySettings | None = None,
    ejection_base: float = 30.0,
    probes: ProbeSettings | None = None,
    limits: Limits | None = None,
    acl: AclSettings | None = None,
    reports: ReportSettings | None = None,
    quotas: Quotas | None = None,
    tls: TlsFiles | None = None,
    etcd: EtcdOptions | None = None,
    dns: DnsSettings | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; `CannotServe` (before anything starts) if the address cannot be had.

    The worker prints one line once it serves, or one saying why it cannot, and the process exits 1.
    `tls` must have been checked (`TlsFiles.context`).
    """
    expiry = expiry or ExpirySettings()
    limits = limits or Limits()
    listener = listen(host, port)
    _dns[:] = [DnsListener(dns)] if dns is not None else []  # DnsUnavailable: the port is taken
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    where = f"data in {os.path.abspath(data_dir)}" if store == "sqlite" else f"store {store}"
    also = f", DNS on {dns.shown} (UDP and TCP)" if dns is not None else ""
    _ready[:] = [f"swarm: serving on {scheme}://{shown}:{port}{also}, {where}"]
    granian_tls: dict[str, Any] = {}
    files_each = 1
    if tls is not None and tls.client_ca is not None:
        # The relay takes the public port; granian serves it on loopback, for the relay only.
        drop_silent_clients(listener, limits.client_timeout)
        public, listener = listener, listen("127.0.0.1", 0)
        _relayed[:] = [(public, listener.getsockname()[:2], tls.context())]
        host, port = listener.getsockname()[:2]
        files_each = 3  # the client's connection, the relay's to granian and granian's end of it
    elif tls is not None:
        granian_tls = {"ssl_cert": Path(tls.cert), "ssl_key": Path(tls.key), "ssl_protocol_min": SSLProtocols.tls12}
    os.environ.update(limits.to_env())
    os.environ["SWARM_EJECTION_BASE"] = f"{ejection_base}s"
    os.environ["SWARM_DATA_DIR"] = os.path.abspath(data_dir)
    os.environ["SWARM_STORE"] = store
    os.environ.update((etcd or EtcdOptions()).to_env())  # the worker's store reads them (open_store)
    os.environ["SWARM_EXPIRY_SHARE"] = str(expiry.share)
    os.environ["SWARM_EXPIRY_MINIMUM"] = str(expiry.minimum)
    os.environ["SWARM_EXPIRY_WINDOW"] = f"{expiry.window}s"
    os.environ["SWARM_EXPIRY_OWNERS"] = str(expiry.owners)
    os.environ["SWARM_PROBES"] = msgspec.json.encode(probes or ProbeSettings()).decode()
    os.environ["SWARM_ACL"] = msgspec.json.encode(acl or AclSettings()).decode()
    os.environ["SWARM_REPORTS"] = msgspec.json.encode(reports or ReportSettings()).decode()
    os.environ["SWARM_QUOTAS"] = msgspec.json.encode(quotas or Quotas()).decode()
    _end_waits_first()
    _allow_open_files(limits.connections, files_each)
    _Granian(
        "swarm_discovery.server:worker_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=1,
        loop=Loops.uvloop,
        # Not TaskImpl.rust: with granian 2.8 it keeps every request that awaited its body alive
        # (the finished coroutine, its future and context: about 1 KB per PUT, forever).
        task_impl=TaskImpl.asyncio,
        # granian's own news (starting, spawning a worker, stopping) only when debugging
        log_level=log_level if log_level in ("debug", "error") else "warning",
        backlog=BACKLOG,
        # HTTP/1 only: with HTTP/2 allowed too, granian reads a connection's first bytes to tell
        # which it speaks with no timeout at all, so a socket that sends nothing stays forever.
        http=HTTPModes.http1,
        # The header timeout also covers a request head sent slowly and idle keep-alive connections.
        http1_settings=HTTP1Settings(
            header_read_timeout=int(limits.client_timeout * 1000), max_buffer_size=MAX_REQUEST_HEAD
        ),
        backpressure=limits.connections,  # granian serves at most this many connections at once
        # A stopping worker waits for its connections to end, and one whose client takes nothing
        # ends only at the client timeout. Every acknowledged write is durable, so past this the
        # worker is killed rather than waited for.
        workers_kill_timeout=STOP_WITHIN_SECONDS,
        listener=listener,
        user_timeout=limits.client_timeout,
        **granian_tls,
    ).serve()
