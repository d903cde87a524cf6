"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): cache affinity.

A key (session, user, prompt prefix) hashes onto a ring of virtual points; it goes to the first
endpoint clockwise whose outstanding requests are under ceil(1.25 x the mean), so one hot key
cannot overload one endpoint, and KV caches are reused while the endpoint stays healthy. When an
endpoint leaves, only its keys move. Trade-off: a key sticks to one place, so a slow endpoint is
avoided only once it is over the bound; no key means a random point.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random

from .view import Endpoint, PickRequest, View

POINTS = 64  # virtual points per endpoint (fewer for very large pools, to bound the ring)
MAX_RING = 262_144
BOUND = 1.25


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    def __init__(self, bound: float = BOUND) -> None:
        self.bound = bound
        self._endpoints: tuple[Endpoint, ...] | None = None  # held, so its identity is never reused
        self._ids: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[int] = []

    def _build(self, view: View) -> None:
        per = max(1, min(POINTS, MAX_RING // max(len(view.endpoints), 1)))
        ring = sorted((_hash(f"{e.id}#{k}"), i) for i, e in enumerate(view.endpoints) for k in range(per))
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]
        self._ids = view.ids

    def pick(self, view: View, request: PickRequest | None = None) -> Endpoint | None:
        endpoints = view.endpoints
        if not endpoints:
            return None
        if view.endpoints is not self._endpoints:
            # New metrics arrive as a new view; only a new membership moves keys and rebuilds the ring.
            if view.ids != self._ids:
                self._build(view)
            self._endpoints = view.endpoints
        key = request.key if request is not None and request.key is not None else str(random.random())
        start = bisect.bisect(self._points, _hash(key))
        capacity = math.ceil(self.bound * (view.load.total + 1) / len(endpoints))
        outstanding, ids, owners = view.load.outstanding, view.ids, self._owners
        ring = len(owners)
        for step in range(ring):
            owner = owners[(start + step) % ring]
            if outstanding.get(ids[owner], 0) < capacity:
                return endpoints[owner]
        return endpoints[owners[start % ring]]
