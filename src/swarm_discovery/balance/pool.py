"""Shared bookkeeping around any strategy: locality tiers for failover, and panic mode.

Healthy endpoints are split into priority tiers: the caller's zone, then its region, then the
rest (or, given a point, the nearest band, then the rest); every pick goes to the first tier that
has anyone, through that tier's own strategy instance. When fewer than `panic_threshold` of all
endpoints are healthy, the health signal itself is suspect (or the few left would be crushed):
the pool spreads over every endpoint instead and says so in `panic`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from ..locality import distance_km
from .view import Endpoint, Load, PickRequest, View

NEAR_BAND_KM = 100.0


class Strategy(Protocol):
    def pick(self, view: View, request: PickRequest | None = None) -> Endpoint | None: ...


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
        self._tiers: list[tuple[View, Strategy]] = []

    def update(self, endpoints: Iterable[Endpoint], healthy: Callable[[Endpoint], bool]) -> None:
        """A new membership: rebuild the tiers (strategies keep nothing across a change)."""
        everything = list(endpoints)
        good = [e for e in everything if healthy(e)]
        self.panic = bool(everything) and len(good) < self.panic_threshold * len(everything)
        chosen = everything if self.panic else good
        self._tiers = [(View(tier, self.load), self._strategy()) for tier in self._split(chosen) if tier]

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
        """An endpoint from the first tier with anyone in it, skipping `exclude` (ids already tried)."""
        skip = set(exclude)
        for view, strategy in self._tiers:
            for _ in range(3):  # a retry usually lands elsewhere at once: no filtered copy needed
                found = strategy.pick(view, request)
                if found is None or found.id not in skip:
                    break
            if found is not None and found.id not in skip:
                return found
            left = [e for e in view.endpoints if e.id not in skip]
            if left:
                return strategy.pick(View(left, self.load), request)
        return None

    @property
    def size(self) -> int:
        return sum(len(view) for view, _ in self._tiers)
