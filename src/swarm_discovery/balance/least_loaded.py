"""Least loaded by the power of two choices: sample two endpoints, send to the less loaded.

Load is the work waiting at an endpoint: this client's outstanding requests plus the queue depth
the endpoint last reported in its heartbeat metrics (plus the request about to be sent), divided
by `capacity.max_concurrency` when given, and weighted by the endpoint's recent latency as this
client saw it, so that a slow endpoint looks as loaded as it is even when its queue is short.
Two random choices avoid the herd that "always the least loaded" causes when many clients act on
the same stale numbers. Trade-off: needs load signals; with none it degrades to random. Fails
soft: a slow endpoint accumulates outstanding requests and latency, and stops being chosen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

from .endpoints import NOTHING, Endpoint, EndpointSet, PickRequest

DEFAULT_LATENCY = 0.001  # before the first answer: optimistic, so that new endpoints get tried


class LeastLoaded:
    def __init__(self, rand: Callable[[int], int] | None = None) -> None:
        self._rand = rand or _Uniform()

    @staticmethod
    def load(view: EndpointSet, endpoint: Endpoint) -> float:
        load = view.load
        busy = load.outstanding.get(endpoint.id, 0) + endpoint.queue_depth + 1
        if endpoint.max_concurrency:
            busy /= endpoint.max_concurrency
        return busy * load.latency.get(endpoint.id, DEFAULT_LATENCY)

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None:
        endpoints: Sequence[Endpoint] = view.endpoints
        skip: Collection[str] = request.exclude if request is not None else NOTHING
        if skip and 2 * len(skip) >= len(endpoints):
            # Mostly excluded: sampling would keep hitting the excluded, so sample among the rest.
            endpoints, skip = [e for e in endpoints if e.id not in skip], NOTHING
        n = len(endpoints)
        if n <= 1:
            return endpoints[0] if n and endpoints[0].id not in skip else None
        a = self._rand(n)
        while endpoints[a].id in skip:  # fewer than half are excluded: a few draws at most
            a = self._rand(n)
        b = a
        while b == a or endpoints[b].id in skip:
            b = self._rand(n - 1)
            b += b >= a  # a second, different endpoint
        first, second = endpoints[a], endpoints[b]
        return first if self.load(view, first) <= self.load(view, second) else second


class _Uniform:
    """A random index below n: `random.randrange` without its argument checks, a third of its cost
    (it runs twice per pick)."""

    __slots__ = ("_random",)

    def __init__(self) -> None:
        self._random = random.Random().random

    def __call__(self, n: int) -> int:
        return int(self._random() * n)
