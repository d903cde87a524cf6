"""Choosing one instance, transport neutral: strategies behind one `pick(view, request=None)`,
`Pool` for locality failover and panic mode around any of them, and `BalancerCore` (in `flow`)
for retries, ejections and reports, shared by the SDK and the gateway."""

from __future__ import annotations

from .ai_aware import AiAware, AiSettings, Signals
from .consistent_hash import ConsistentHash
from .endpoints import Endpoint, EndpointSet, Load, PickRequest
from .flow import BalancerCore, NoInstance, Outcome
from .least_loaded import LeastLoaded
from .pool import Pool
from .round_robin import RoundRobin
from .strategies import STRATEGIES, Strategy
from .weighted import Weighted

__all__ = [
    "STRATEGIES",
    "AiAware",
    "AiSettings",
    "BalancerCore",
    "ConsistentHash",
    "Endpoint",
    "EndpointSet",
    "LeastLoaded",
    "Load",
    "NoInstance",
    "Outcome",
    "PickRequest",
    "Pool",
    "RoundRobin",
    "Signals",
    "Strategy",
    "Weighted",
]
