"""The interface every strategy implements, and the strategies by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .ai_aware import AiAware
from .consistent_hash import ConsistentHash
from .endpoints import Endpoint, EndpointSet, PickRequest
from .least_loaded import LeastLoaded
from .round_robin import RoundRobin
from .weighted import Weighted


class Strategy(Protocol):
    """One instance serves one tier for the pool's life: it sees each new `EndpointSet` of that
    tier and keeps what it built (a ring, a schedule) while the membership it depends on holds.
    It never returns an endpoint named in `request.exclude`; None when nothing else is left."""

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None: ...


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "weighted": Weighted,
    "least_loaded": LeastLoaded,
    "consistent_hash": ConsistentHash,
    "ai_aware": AiAware,
}
