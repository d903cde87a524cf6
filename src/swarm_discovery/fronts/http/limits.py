"""Bounds on what clients may hold open (long reads in all and per client address, slow clients)
and on how fast they may write (`rates.py`).

A blocking query or a watch stream holds a connection for minutes. Without a cap of their own,
long reads fill every connection the server will take and writes and heartbeats wait behind them;
with one below the connection cap (`server.py`), there is always room for short requests. Past a
cap the answer is 429 with Retry-After, and the client's own backoff spreads the retries.
"""

from __future__ import annotations

import math
import os

import msgspec

from ...durations import parse_duration
from ...errors import TooBusy


class Limits(msgspec.Struct, frozen=True):
    """What `swarm serve` bounds; the README's limits table lists the defaults."""

    connections: int = 8192  # open connections; more wait in the kernel's accept queue
    long_reads: int = 4096  # open blocking queries and watch streams, from every client together
    long_reads_per_client: int = 1024  # ... from one client address
    watch_buffer: int = 1024 * 1024  # bytes one watch stream may have sent that its client has not taken
    client_timeout: float = 10.0  # a request head, an idle connection, a watcher that takes nothing
    write_rate: float = 1000.0  # requests other than GET a second per caller, in bursts of a second's; 0: any

    @classmethod
    def from_env(cls) -> Limits:
        """What `swarm serve` hands its worker process: SWARM_MAX_*, SWARM_WATCH_BUFFER, SWARM_CLIENT_TIMEOUT,
        SWARM_WRITE_RATE."""
        default = cls()
        env = os.environ.get
        timeout = env("SWARM_CLIENT_TIMEOUT")
        return cls(
            connections=int(env("SWARM_MAX_CONNECTIONS") or default.connections),
            long_reads=int(env("SWARM_MAX_LONG_READS") or default.long_reads),
            long_reads_per_client=int(env("SWARM_MAX_LONG_READS_PER_CLIENT") or default.long_reads_per_client),
            watch_buffer=int(env("SWARM_WATCH_BUFFER") or default.watch_buffer),
            client_timeout=parse_duration(timeout, "SWARM_CLIENT_TIMEOUT") if timeout else default.client_timeout,
            write_rate=float(env("SWARM_WRITE_RATE") or default.write_rate),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "SWARM_MAX_CONNECTIONS": str(self.connections),
            "SWARM_MAX_LONG_READS": str(self.long_reads),
            "SWARM_MAX_LONG_READS_PER_CLIENT": str(self.long_reads_per_client),
            "SWARM_WATCH_BUFFER": str(self.watch_buffer),
            "SWARM_CLIENT_TIMEOUT": f"{self.client_timeout}s",
            "SWARM_WRITE_RATE": str(self.write_rate),
        }

    def problem(self) -> str | None:
        """What is inconsistent in these limits, naming the flag, or None."""
        if min(self.connections, self.long_reads, self.long_reads_per_client, self.watch_buffer) < 1:
            return "--max-connections, --max-long-reads, --max-long-reads-per-client, --watch-buffer: at least 1"
        if self.long_reads >= self.connections:
            return "--max-long-reads: must be below --max-connections, or long reads can take every connection"
        if not 0.001 <= self.client_timeout <= 60:
            return "--client-timeout: between 1ms and 60s"
        if not 0 <= self.write_rate < math.inf:
            return "--write-rate: a number of requests a second, or 0 for no limit"
        return None


class Slot:
    """One admitted long read; `release` it when the read ends (again is harmless)."""

    __slots__ = ("_client", "_reads")

    def __init__(self, reads: LongReads, client: str) -> None:
        self._reads: LongReads | None = reads
        self._client = client

    def release(self) -> None:
        if self._reads is not None:
            self._reads.release(self._client)
            self._reads = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class LongReads:
    """Open blocking queries and watch streams, counted in all and per client address."""

    def __init__(self, limits: Limits) -> None:
        self.total = limits.long_reads
        self.per_client = limits.long_reads_per_client
        self.open = 0
        self._by_client: dict[str, int] = {}  # only addresses with an open read: bounded by `total`

    def hold(self, client: str) -> Slot:
        """A slot for one more long read from `client`, or `TooBusy`."""
        held = self._by_client.get(client, 0)
        if held >= self.per_client:
            raise TooBusy(f"too many open blocking queries and watches from {client} (at most {self.per_client})")
        if self.open >= self.total:
            raise TooBusy(f"too many open blocking queries and watches (at most {self.total})")
        self._by_client[client] = held + 1
        self.open += 1
        return Slot(self, client)

    def release(self, client: str) -> None:
        self.open -= 1
        held = self._by_client[client] - 1
        if held:
            self._by_client[client] = held
        else:
            del self._by_client[client]
