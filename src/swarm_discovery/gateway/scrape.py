"""Model servers' own load metrics, read from their Prometheus endpoint (vLLM's `/metrics`).

Heartbeat metrics reach the gateway at most once a second, through the registry; a model
server's queue changes much faster. With `scrape` set on the model route, every server serving a
model is read every `scrape_every` (llm-d's endpoint picker reads every 50 ms): requests waiting
(`vllm:num_requests_waiting`), running (`vllm:num_requests_running`) and KV-cache use
(`vllm:gpu_cache_usage_perc`, or `vllm:kv_cache_usage_perc` in newer vLLM), summed over label
sets, kept as `Signals` with the time they were read. A server that does not answer keeps its
last reading, which turns stale and so counts as busy. At most MAX_AT_ONCE reads are in flight,
each with the route's connect timeout and at most MAX_METRICS bytes of answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from ..balance import Signals
from .looping import Looping
from .upstream import UpstreamError, Upstreams
from .wire import BadResponse

log = logging.getLogger("swarm.gateway")
MAX_AT_ONCE = 64
MAX_METRICS = 1 << 20
NAMES = {
    b"vllm:num_requests_waiting": "waiting",
    b"vllm:num_requests_running": "running",
    b"vllm:gpu_cache_usage_perc": "kv",
    b"vllm:kv_cache_usage_perc": "kv",
}


def parse_metrics(text: bytes) -> dict[str, float]:
    """The load figures in a Prometheus text exposition, each summed over its label sets."""
    found: dict[str, float] = {}
    for line in text.split(b"\n"):
        if not line.startswith(b"vllm:"):
            continue
        name, _, rest = line.partition(b"{") if b"{" in line.split(b" ", 1)[0] else line.partition(b" ")
        figure = NAMES.get(name.strip())
        if figure is None:
            continue
        value = rest.rpartition(b"}")[2] if b"}" in rest else rest
        try:
            number = float(value.split()[0])
        except (ValueError, IndexError):
            continue
        found[figure] = found.get(figure, 0.0) + number
    return found


class Scraper(Looping):
    def __init__(
        self,
        upstreams: Upstreams,
        path: str,
        every: float,
        timeout: float,
        signals: dict[str, Signals],
        targets: Callable[[], Iterable[tuple[str, int]]],
        read: Callable[[], None],
    ) -> None:
        self.upstreams = upstreams
        self.path = path
        self.every = every
        self.timeout = timeout
        self.signals = signals
        self._targets = targets  # every server that serves a model now
        self._read = read  # called after each round: capacity may have freed up
        self._slots = asyncio.Semaphore(MAX_AT_ONCE)
        self.failures = 0

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            targets = set(self._targets())
            for gone in [key for key in self.signals if _address(key) not in targets]:
                del self.signals[gone]
            await asyncio.gather(*(self._scrape(host, port) for host, port in targets))
            self._read()
            await asyncio.sleep(max(self.every - (time.monotonic() - started), 0.0))

    async def _scrape(self, host: str, port: int) -> None:
        async with self._slots:
            try:
                body = await self.fetch(host, port)
            except (UpstreamError, BadResponse, TimeoutError) as exc:
                self.failures += 1
                log.debug("scraping %s:%d%s: %s", host, port, self.path, exc)
                return
        figures = parse_metrics(body)
        self.signals[f"{host}:{port}"] = Signals(
            waiting=figures.get("waiting", 0.0),
            running=figures.get("running", 0.0),
            kv=figures.get("kv", 0.0),
            at=time.monotonic(),
        )

    async def fetch(self, host: str, port: int) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        conn = await self.upstreams.connect(host, port, self.timeout)
        try:
            conn.write(f"GET {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("latin-1"))
            head = await conn.head(deadline, bodiless=False)
            if head.status != 200:
                raise UpstreamError(f"answered {head.status}")
            parts, size = [], 0
            while part := await conn.read(deadline):
                size += len(part)
                if size > MAX_METRICS:
                    raise UpstreamError(f"metrics larger than {MAX_METRICS} bytes")
                parts.append(part)
        except BaseException:
            conn.close()
            raise
        self.upstreams.release(conn)
        return b"".join(parts)


def _address(key: str) -> tuple[str, int]:
    host, _, port = key.rpartition(":")
    return host, int(port)
