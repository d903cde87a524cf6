"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): cache affinity.

A key (session, user, prompt prefix) hashes onto a ring of virtual points; it goes to the first
endpoint clockwise whose outstanding requests are under ceil(1.25 x the mean), so one hot key
cannot overload one endpoint, and KV caches are reused while the endpoint stays healthy. When an
endpoint leaves, only its keys move. The ring changes only with the membership, and then in
place: the points of those that left are taken out and those of newcomers put in, rather than
hashing the whole pool again (a few milliseconds instead of half a second at 10,000 endpoints).
Each endpoint has as many points as the ring's size allows; that number is kept while the pool
neither outgrows the ring nor shrinks to half its size, since changing it moves every key.
A retry walks on past the endpoints it already tried. Trade-off: a key sticks to one place, so
a slow endpoint is avoided only once it is over the bound; no key means a random point.
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
        self._index: dict[str, int] = {}  # id -> its place in the view's endpoints
        self._per = 0  # points per endpoint
        self._points: list[int] = []  # sorted
        self._owners: list[str] = []  # the id each point belongs to

    def _build(self, view: EndpointSet) -> None:
        """Make the ring hold `view`'s members: in place, unless most of them changed or the
        number of points per endpoint must (the pool outgrew the ring, or fell to half its size)."""
        count = max(len(view.endpoints), 1)
        members, had = set(view.ids), set(self._index)
        left, came = had - members, members - had
        self._index = {eid: i for i, eid in enumerate(view.ids)}
        self._ids = view.ids
        per = self._per
        if not per or per * count > MAX_RING or _per(count) >= 2 * per:
            per = _per(count)
        if per != self._per or len(left) + len(came) > count // 4:  # from scratch: cheaper than in place
            self._per = per
            ring = sorted((point, eid) for eid in view.ids for point in self._points_of(eid))
            self._points = [point for point, _ in ring]
            self._owners = [eid for _, eid in ring]
            return
        points, owners = self._points, self._owners
        for eid in left:
            for point in self._points_of(eid):
                at = bisect.bisect_left(points, point)
                while owners[at] != eid:  # another endpoint's point of the same value comes first
                    at += 1
                del points[at], owners[at]
        for eid in came:
            for point in self._points_of(eid):
                at = bisect.bisect_left(points, point)
                while at < len(points) and points[at] == point and owners[at] < eid:  # as sorted() would
                    at += 1
                points.insert(at, point)
                owners.insert(at, eid)

    def _points_of(self, eid: str) -> list[int]:
        return [_hash(f"{eid}#{k}") for k in range(self._per)]

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
        outstanding, owners, index = view.load.outstanding, self._owners, self._index
        ring = len(owners)
        fallback = None  # everyone is over the bound: the key's own (untried) owner after all
        for step in range(ring):
            owner = owners[(start + step) % ring]
            if owner in skip:
                continue
            if outstanding.get(owner, 0) < capacity:
                return endpoints[index[owner]]
            if fallback is None:
                fallback = endpoints[index[owner]]
        return fallback


def _per(count: int) -> int:
    return max(1, min(POINTS, MAX_RING // count))
