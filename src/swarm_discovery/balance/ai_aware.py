"""AI-aware picking for model servers: prefix-cache affinity weighed against load (llm-d's endpoint picker).

Each candidate gets a score, the weighted sum of three scorers, each between 0 and 1:

- prefix: the share of the prompt's leading blocks it probably has in its KV cache (`PrefixIndex`,
  fed by this strategy's own picks);
- queue: how few requests wait there for a sequence slot, against the others (a request that
  finds a free slot starts at once, cached prefix or not, so running requests do not count);
- kv: the share of its KV cache still free.

A candidate's load is the requests waiting and running there, as its metrics report them, or as
many as this balancer has in flight to it if that is more (metrics lag; what was sent a moment
ago is in no report yet); beyond `capacity.max_concurrency`, they wait. Before scoring, saturated
candidates (`max_waiting` requests waiting, or `max_kv` of the cache in use) are left out, and so
is any candidate loaded more than `imbalance` requests beyond the least loaded: affinity must not
pile requests onto one server while others idle. If every candidate is
saturated the pick is None, and the caller queues the request briefly or refuses it. Metrics come
from `signals` (scraped from the servers, with the time they were read) or else from heartbeat
metrics (`queue_depth`, `running`, `kv_cache_usage`); a scraped reading older than `stale_after`
counts as busy, not idle: such a candidate is used only when no fresh one is left.

Trade-off: needs the prompt as the pick's key and load signals; with neither it is random. Fails
soft: a wrong prefix guess costs one prefill, and the load filter bounds what affinity can cost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import msgspec

from .endpoints import NOTHING, Endpoint, EndpointSet, PickRequest
from .prefix import PrefixIndex


class AiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    prefix_weight: float = 3.0
    queue_weight: float = 2.0
    kv_weight: float = 2.0
    imbalance: float = 8.0  # requests beyond the least loaded candidate's load
    max_waiting: float = 32.0  # requests waiting at a server that make it saturated
    max_kv: float = 0.98  # share of its KV cache in use that makes it saturated
    stale_after: float = 2.0  # seconds
    block_chars: int = 64
    max_blocks: int = 256
    index_blocks: int = 65_536


class Signals(msgspec.Struct, frozen=True):
    """One server's load as its own metrics said at `at` (monotonic seconds; None: age unknown)."""

    waiting: float = 0.0
    running: float = 0.0
    kv: float = 0.0
    at: float | None = None


class AiAware:
    def __init__(
        self,
        settings: AiSettings | None = None,
        signals: Mapping[str, Signals] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or AiSettings()
        s = self.settings
        self.index = PrefixIndex(s.block_chars, s.max_blocks, s.index_blocks)
        self._signals: Mapping[str, Signals] = signals if signals is not None else {}  # by "address:port"
        self._clock = clock
        self._rand = rand or random.Random().random
        self._key: str | None = None
        self._hashes: list[int] = []
        self._ids: tuple[str, ...] = ()

    def signals(self, endpoint: Endpoint) -> Signals:
        found = self._signals.get(f"{endpoint.address}:{endpoint.port}")
        if found is not None:
            return found
        metrics = endpoint.metrics
        return Signals(
            waiting=endpoint.queue_depth, running=metrics.get("running", 0.0), kv=metrics.get("kv_cache_usage", 0.0)
        )

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None:
        s = self.settings
        if view.ids != self._ids:
            if set(self._ids) - set(view.ids):
                self.index.forget(frozenset(view.ids))
            self._ids = view.ids
        skip = request.exclude if request is not None else NOTHING
        now = self._clock()
        fresh: list[tuple[Endpoint, float, float, float]] = []  # endpoint, load, waiting, kv
        stale: list[tuple[Endpoint, float, float, float]] = []
        for endpoint in view.endpoints:
            if endpoint.id in skip:
                continue
            signals = self.signals(endpoint)
            own = view.load.of(endpoint)
            load = max(signals.waiting + signals.running, own)
            waiting = signals.waiting
            if endpoint.max_concurrency:
                waiting = max(waiting, load - endpoint.max_concurrency)
            if waiting >= s.max_waiting or signals.kv >= s.max_kv:
                continue  # saturated
            if signals.at is not None and now - signals.at > s.stale_after:
                stale.append((endpoint, own, own, 1.0))
            else:
                fresh.append((endpoint, load, waiting, signals.kv))
        candidates = fresh or stale
        if not candidates:
            return None
        least = min(c[1] for c in candidates)
        candidates = [c for c in candidates if c[1] - least <= s.imbalance]
        fewest = min(c[2] for c in candidates)
        most = max(c[2] for c in candidates)
        key = request.key if request is not None else None
        if key is not self._key:
            self._key, self._hashes = key, self.index.hashes(key) if key else []
        hashes = self._hashes
        matched = self.index.matched(hashes, [c[0].id for c in candidates]) if hashes else {}
        best: Endpoint | None = None
        best_score = -1.0
        for endpoint, _, waiting, kv in candidates:
            score = (
                s.prefix_weight * (matched.get(endpoint.id, 0) / len(hashes) if hashes else 0.0)
                + s.queue_weight * ((most - waiting) / (most - fewest) if most > fewest else 1.0)
                + s.kv_weight * (1.0 - kv)
                + self._rand() * 1e-6  # ties go to any of the best, not always the first
            )
            if score > best_score:
                best, best_score = endpoint, score
        if best is not None and hashes:
            self.index.record(hashes, best.id)
        return best
