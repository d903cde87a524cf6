"""Probers: each implements `async def probe(check) -> ProbeResult`, and `forget(check)` for what
only a removed check used.

Timing, thresholds and jitter belong to the scheduler. Probers share their connection pools:
one HTTP pool (and one that skips TLS verification) and one gRPC channel per target, closed when
the last check on that target is forgotten. Every prober connects only to addresses the
`TargetPolicy` allows; a denied target fails the probe at once, with the policy's reason as output.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Protocol

import aiohttp
import grpc
from aiohttp.abc import AbstractResolver, ResolveResult
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..durations import format_duration
from ..records import CheckStatus
from .check import CheckRuntime, ProbeResult
from .targets import TargetDenied, TargetPolicy, is_address

_GRPC_STATUS: dict[int, CheckStatus] = {health_pb2.HealthCheckResponse.SERVING: "passing"}
# What a probe reads of a response body (the status decides): enough for a short answer to arrive
# in full, so that its connection goes back to the pool, and never a stream that does not end.
MAX_BODY = 4096


class Prober(Protocol):
    async def probe(self, check: CheckRuntime) -> ProbeResult: ...

    def forget(self, check: CheckRuntime) -> None: ...

    async def close(self) -> None: ...


def elapsed(started: float) -> float:
    return time.perf_counter() - started


async def drained(body: aiohttp.StreamReader, limit: int) -> bool:
    """Read at most `limit` bytes of `body`; True when that was all of it."""
    while limit > 0:
        chunk = await body.read(limit)
        if not chunk:
            return True
        limit -= len(chunk)
    return body.at_eof()


class _FencedResolver(AbstractResolver):
    """aiohttp's name lookups, through the policy: a connection opens only to an allowed address."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=found, proto=0, flags=socket.AI_NUMERICHOST)
            for found, address in await self._policy.resolve(host, port)
        ]

    async def close(self) -> None:
        pass


# What an HTTP request to a target can raise, each said in one line by `failure`.
HTTP_FAILURES = (TargetDenied, TimeoutError, aiohttp.ClientError)


def failure(exc: BaseException, timeout: float) -> str:
    """One of HTTP_FAILURES as a check's output."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {format_duration(timeout)}"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, TargetDenied):
        return str(exc.os_error)  # a denied name arrives here, wrapped by the connector
    return str(exc) if isinstance(exc, TargetDenied) else f"{type(exc).__name__}: {exc}"


class HttpProber:
    """2xx passes (warning when slower than warn_latency), 429 warns, anything else is critical.

    aiohttp rather than httpx here: httpx's pool rescans every queued request against every
    connection, which took a whole core at a few hundred probes/s; aiohttp's connector does not.
    Its pool is as large as the scheduler's bound on probes in flight, so a probe never waits in
    it for a connection (and never spends its timeout there).

    HTTPS targets are verified against the system's CAs, or only those in `ca_file` (as Consul's
    `ca_file` serves its checks), for the name in the URL or the check's `tls_server_name`.
    """

    def __init__(self, policy: TargetPolicy, max_connections: int, ca_file: str | None = None) -> None:
        self._policy = policy
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._max_connections = max_connections
        self._ca_file = ca_file

    def _session(self, verify: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(verify)
        if session is None:
            tls: ssl.SSLContext | bool = verify
            if verify and self._ca_file is not None:
                tls = ssl.create_default_context(cafile=self._ca_file)
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=tls, resolver=_FencedResolver(self._policy)
            )
            session = self._sessions[verify] = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return session

    async def fence(self, check: CheckRuntime) -> None:
        """Raise TargetDenied for an address target the policy refuses: aiohttp asks no resolver
        about an address, so the policy must (names go through `_FencedResolver`)."""
        host, port = check.target or ("", 0)
        if is_address(host):
            await self._policy.resolve(host, port)

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        spec = check.spec
        session = self._session(verify=not spec.tls_skip_verify)
        started = time.perf_counter()
        try:
            await self.fence(check)
            async with session.request(
                spec.method,
                spec.url or "",
                headers=spec.headers,
                server_hostname=spec.tls_server_name,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=check.timeout),
            ) as response:
                if not await drained(response.content, MAX_BODY):
                    response.close()  # a body too long to drain: drop the connection, unread
                code, reason = response.status, response.reason or ""
        except HTTP_FAILURES as exc:
            return ProbeResult("critical", failure(exc, check.timeout), elapsed(started))
        took = elapsed(started)
        # No latency in the output (it is the check's duration_ms): an output that differs on every
        # probe is a change on every probe, for watchers, the index, and each shared store write.
        line = f"HTTP {spec.method} {spec.url}: {code} {reason}"
        if spec.expect_status is not None:
            return ProbeResult("passing" if code == spec.expect_status else "critical", line, took)
        if 200 <= code < 300:
            if check.warn_latency is not None and took > check.warn_latency:
                return ProbeResult("warning", f"{line} (slower than {check.warn_latency * 1000:g} ms)", took)
            return ProbeResult("passing", line, took)
        return ProbeResult("warning" if code == 429 else "critical", line, took)

    def forget(self, check: CheckRuntime) -> None:
        """Nothing is kept per target: idle pooled connections close after aiohttp's keep-alive
        timeout, and its DNS cache holds a bounded number of hosts."""

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


class TcpProber:
    """Passes when a connection opens within the timeout, to any of the target's allowed addresses."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        host, port = check.target or ("", 0)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                writer = await self._connect(host, port)
        except TargetDenied as exc:
            return ProbeResult("critical", str(exc), elapsed(started))
        except TimeoutError:
            return ProbeResult("critical", f"TCP connect {check.spec.tcp}: timed out", elapsed(started))
        except OSError as exc:
            return ProbeResult("critical", f"TCP connect {check.spec.tcp}: {exc.strerror or exc}", elapsed(started))
        writer.close()
        return ProbeResult("passing", f"TCP connect {check.spec.tcp}: success", elapsed(started))

    async def _connect(self, host: str, port: int) -> asyncio.StreamWriter:
        """The first allowed address that takes the connection; the last one's error if none does."""
        *others, last = await self._policy.resolve(host, port)
        for _, address in others:
            try:
                return (await asyncio.open_connection(address, port))[1]
            except OSError:
                continue
        return (await asyncio.open_connection(last[1], port))[1]

    def forget(self, check: CheckRuntime) -> None:
        """A TCP probe keeps nothing between probes."""

    async def close(self) -> None:
        pass


class GrpcProber:
    """The standard grpc.health.v1.Health/Check, for the server or a named service.

    A target's channel is shared by every check on it; it closes when the last of them is
    forgotten, so targets that come and go do not leave channels (and their threads' buffers) behind.
    The channel connects to an address the policy allowed (gRPC would otherwise resolve the name
    again itself), and is replaced when a probe finds that address no longer among the target's.
    """

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}  # target -> (address, channel)
        self._users: dict[str, set[CheckRuntime]] = {}  # per target, the checks that probed it
        self._closing: set[asyncio.Task[None]] = set()

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        target, _, service = (check.spec.grpc or "").partition("/")
        host, port = check.target or ("", 0)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                addresses = [address for _, address in await self._policy.resolve(host, port)]
        except TargetDenied as exc:
            return ProbeResult("critical", str(exc), elapsed(started))
        except TimeoutError:
            return ProbeResult("critical", f"gRPC {check.spec.grpc}: resolving timed out", elapsed(started))
        except OSError as exc:
            return ProbeResult("critical", f"gRPC {check.spec.grpc}: {exc.strerror or exc}", elapsed(started))
        stub = health_pb2_grpc.HealthStub(self._channel(target, addresses, port))
        self._users.setdefault(target, set()).add(check)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=check.timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(
                "critical",
                f"gRPC {check.spec.grpc}: {exc.code().name} {exc.details() or ''}".strip(),
                elapsed(started),
            )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return ProbeResult(
            _GRPC_STATUS.get(reply.status, "critical"), f"gRPC {check.spec.grpc}: {status}", elapsed(started)
        )

    def _channel(self, target: str, addresses: list[str], port: int) -> grpc.aio.Channel:
        pinned = self._channels.get(target)
        if pinned is not None and pinned[0] in addresses:
            return pinned[1]
        if pinned is not None:
            self._close_later(pinned[1])
        address = addresses[0]
        channel = grpc.aio.insecure_channel(
            f"[{address}]:{port}" if ":" in address else f"{address}:{port}",
            options=[("grpc.default_authority", target)],  # what the target's server expects to be called
        )
        self._channels[target] = (address, channel)
        return channel

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        # Closing is a coroutine and forget is called from synchronous registry code.
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def forget(self, check: CheckRuntime) -> None:
        target = (check.spec.grpc or "").partition("/")[0]
        users = self._users.get(target)
        if users is None:
            return
        users.discard(check)
        if not users:
            del self._users[target]
            self._close_later(self._channels.pop(target)[1])

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._users.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
