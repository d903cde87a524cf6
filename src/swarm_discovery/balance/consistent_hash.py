"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): cache affinity.

A key (session, user, prompt prefix) hashes onto a ring of virtual points; it goes to the first
endpoint clockwise whose outstanding requests are under ceil(1.25 x the mean), so one hot key
cannot overload one endpoint, and KV caches are reused while the endpoint stays healthy. When an
endpoint leaves, only its keys move. The ring is rebuilt only when the membership changes, and a
retry walks on past the endpoints it already tried. Trade-off: a key sticks to one place, so a
slow endpoint is avoided only once it is over the bound; no key means a random point.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random

from .endpoints import NOTHING, Endpoint, EndpointSet, PickRequest

POINTS = 64  # virtual points per endpoint (fewer for very large pools, to bound the ring)
MAX_RING = 262_144
BOUND = 1.25


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    def __init__(self, bound: float = BOUND) -> None:
        self.bound = bound
        self._view: EndpointSet | None = None  # held, so its identity is never reused
        self._ids: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[int] = []

    def _build(self, view: EndpointSet) -> None:
        per = max(1, min(POINTS, MAX_RING // max(len(view.endpoints), 1)))
        ring = sorted((_hash(f"{e.id}#{k}"), i) for i, e in enumerate(view.endpoints) for k in range(per))
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]
        self._ids = view.ids

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None:
        endpoints = view.endpoints
        if not endpoints:
            return None
        if view is not self._view:
            # A new set with the same ids (new health elsewhere, new endpoints) keeps the ring.
            if view.ids != self._ids:
                self._build(view)
            self._view = view
        skip = request.exclude if request is not None else NOTHING
        if len(skip) >= len(endpoints) and skip.issuperset(view.ids):
            return None
        key = request.key if request is not None and request.key is not None else str(random.random())
        start = bisect.bisect(self._points, _hash(key))
        capacity = math.ceil(self.bound * (view.load.total + 1) / len(endpoints))
        outstanding, ids, owners = view.load.outstanding, view.ids, self._owners
        ring = len(owners)
        fallback = None  # everyone is over the bound: the key's own (untried) owner after all
        for step in range(ring):
            owner = owners[(start + step) % ring]
            if ids[owner] in skip:
                continue
            if outstanding.get(ids[owner], 0) < capacity:
                return endpoints[owner]
            if fallback is None:
                fallback = endpoints[owner]
        return fallback
