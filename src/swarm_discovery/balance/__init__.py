"""Choosing one instance: strategies behind one `pick(view, request=None)`, shared by the SDK and
the gateway, and `Pool` for locality failover and panic mode around any of them."""

from __future__ import annotations

from collections.abc import Callable

from .consistent_hash import ConsistentHash
from .least_loaded import LeastLoaded
from .pool import Pool, Strategy
from .round_robin import RoundRobin
from .view import Endpoint, Load, PickRequest, View
from .weighted import Weighted

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "weighted": Weighted,
    "least_loaded": LeastLoaded,
    "consistent_hash": ConsistentHash,
}

__all__ = [
    "STRATEGIES",
    "ConsistentHash",
    "Endpoint",
    "LeastLoaded",
    "Load",
    "PickRequest",
    "Pool",
    "RoundRobin",
    "Strategy",
    "View",
    "Weighted",
]
