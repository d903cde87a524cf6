"""Ordering by nearness: a zone or region name, or a point (`lat,lon`, great-circle distance)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from .errors import BadRequest
from .records import Location

T = TypeVar("T")
_EARTH_KM = 6371.0


class Near(msgspec.Struct, frozen=True):
    name: str | None = None
    lat: float | None = None
    lon: float | None = None


def parse_near(text: str) -> Near:
    if "," in text:
        try:
            lat, lon = (float(part) for part in text.split(","))
        except ValueError:
            raise BadRequest(f"near: {text!r} is neither a region, a zone nor `lat,lon`") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise BadRequest("near: latitude must be in [-90, 90] and longitude in [-180, 180]")
        return Near(lat=lat, lon=lon)
    if not text or len(text) > 128:
        raise BadRequest("near: give a region, a zone or `lat,lon`")
    return Near(name=text)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(math.sqrt(h))


def sort_near(items: Sequence[T], near: Near, location: Callable[[T], Location | None]) -> list[T]:
    """Same zone first, then same region, then the rest; or nearest first for a point.

    A name may be a zone or a region: when some item sits in a zone of that name, that zone's
    region ranks second. Items without a location go last; the sort is stable.
    """
    if near.name is None:
        assert near.lat is not None and near.lon is not None

        def by_distance(item: T) -> float:
            loc = location(item)
            if loc is None or loc.lat is None or loc.lon is None:
                return math.inf
            return distance_km(near.lat, near.lon, loc.lat, loc.lon)  # type: ignore[arg-type]

        return sorted(items, key=by_distance)

    region = next(
        (loc.region for item in items if (loc := location(item)) is not None and loc.zone == near.name),
        near.name,
    )

    def by_tier(item: T) -> int:
        loc = location(item)
        if loc is None:
            return 3
        if loc.zone == near.name:
            return 0
        return 1 if loc.region == region else 2

    return sorted(items, key=by_tier)
