"""Shared bookkeeping around any strategy: locality tiers for failover, and panic mode.

Healthy endpoints are split into priority tiers: the caller's zone, then its region, then the
rest (or, given a point, the nearest band, then the rest); every pick goes to the first tier that
has anyone, through that tier's own strategy instance. When fewer than `panic_threshold` of all
endpoints are healthy, the health signal itself is suspect (or the few left would be crushed):
the pool spreads over every endpoint instead and says so in `panic`. Each tier keeps its strategy
instance for the pool's life, and an update that changes neither the endpoints nor their health
(only metrics) leaves the tiers as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from ..locality import distance_km
from .endpoints import Endpoint, EndpointSet, Load, PickRequest
from .strategies import Strategy

NEAR_BAND_KM = 100.0


class Pool:
    def __init__(
        self,
        strategy: Callable[[], Strategy],
        *,
        zone: str | None = None,
        region: str | None = None,
        near: tuple[float, float] | None = None,
        panic_threshold: float = 0.5,
    ) -> None:
        self._strategy = strategy
        self.zone, self.region, self.near = zone, region, near
        self.panic_threshold = panic_threshold
        self.load = Load()
        self.panic = False
        self._endpoints: list[Endpoint] = []
        self._healthy: Collection[str] | None = None
        self._tiers: list[EndpointSet] = []
        self._strategies: list[Strategy] = []  # one per tier position, for the pool's life

    def update(self, endpoints: Sequence[Endpoint], healthy: Collection[str] | None = None) -> None:
        """The endpoints now, and the ids of those that are healthy (None: all of them)."""
        everything = list(endpoints)
        if everything == self._endpoints and healthy == self._healthy:
            return  # the same endpoint objects in the same health: only their metrics moved
        self._endpoints, self._healthy = everything, healthy
        good = everything if healthy is None else [e for e in everything if e.id in healthy]
        self.panic = bool(everything) and len(good) < self.panic_threshold * len(everything)
        self._tiers = [EndpointSet(tier, self.load) for tier in self._split(everything if self.panic else good)]
        while len(self._strategies) < len(self._tiers):
            self._strategies.append(self._strategy())

    def _split(self, endpoints: list[Endpoint]) -> list[list[Endpoint]]:
        if self.zone is None and self.region is None and self.near is None:
            return [endpoints]
        if self.near is not None and self.zone is None and self.region is None:
            lat, lon = self.near
            distances = [
                distance_km(lat, lon, e.lat, e.lon) if e.lat is not None and e.lon is not None else float("inf")
                for e in endpoints
            ]
            band = min(distances, default=float("inf")) * 1.5 + NEAR_BAND_KM
            return [
                [e for e, d in zip(endpoints, distances, strict=True) if d <= band],
                [e for e, d in zip(endpoints, distances, strict=True) if d > band],
            ]
        tiers: list[list[Endpoint]] = [[], [], []]
        for e in endpoints:
            tier = (
                0
                if self.zone is not None and e.zone == self.zone
                else 1
                if (self.region is not None and e.region == self.region)
                else 2
            )
            tiers[tier].append(e)
        return tiers

    def pick(self, request: PickRequest | None = None, exclude: Iterable[str] = ()) -> Endpoint | None:
        """An endpoint from the first tier with anyone left in it, skipping `exclude` (ids already tried)."""
        if exclude:
            request = PickRequest(key=request.key if request is not None else None, exclude=frozenset(exclude))
        for tier, strategy in zip(self._tiers, self._strategies, strict=False):
            if tier.endpoints:
                found = strategy.pick(tier, request)
                if found is not None:
                    return found
        return None

    @property
    def size(self) -> int:
        return sum(len(tier) for tier in self._tiers)
