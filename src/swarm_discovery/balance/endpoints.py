"""What strategies read: endpoints, an immutable set of them (rebuilt when membership or health
changes, kept while only metrics move), the live load that whoever sends the requests keeps, and
what one pick may depend on."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from ..records import InstanceView


class Endpoint:
    """One instance as a balancer sees it.

    `queue_depth` is live: its owner refreshes it in place as heartbeat metrics arrive, so a
    metrics change costs no rebuild. Everything else is fixed for the life of the object.
    """

    __slots__ = (
        "address",
        "id",
        "lat",
        "lon",
        "max_concurrency",
        "port",
        "queue_depth",
        "region",
        "scheme",
        "weight",
        "zone",
    )

    def __init__(
        self,
        id: str,
        address: str,
        port: int,
        *,
        weight: int = 100,
        zone: str | None = None,
        region: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        queue_depth: float = 0.0,
        max_concurrency: float | None = None,
        scheme: str = "http",
    ) -> None:
        self.id = id
        self.address = address
        self.port = port
        self.weight = weight
        self.zone = zone
        self.region = region
        self.lat = lat
        self.lon = lon
        self.queue_depth = queue_depth
        self.max_concurrency = max_concurrency
        self.scheme = scheme  # how requests reach it: https for an instance registered as such

    @classmethod
    def from_instance(cls, instance: InstanceView) -> Endpoint:
        location = instance.location
        return cls(
            instance.id or "",
            instance.address,
            instance.port,
            weight=instance.weight,
            zone=location.zone if location else None,
            region=location.region if location else None,
            lat=location.lat if location else None,
            lon=location.lon if location else None,
            queue_depth=instance.metrics.get("queue_depth", 0.0),
            max_concurrency=instance.capacity.get("max_concurrency"),
            scheme="https" if instance.protocol == "https" else "http",
        )

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, {self.address}:{self.port})"


LATENCY_DECAY = 0.3  # weight of the newest sample in the moving average


class Load:
    """Outstanding requests and recent latency per endpoint id.

    Latency is a moving average that jumps up at once and decays slowly ("peak EWMA", as in
    Finagle and Linkerd), so one slow answer is believed and one fast answer is not.
    """

    __slots__ = ("latency", "outstanding", "total")

    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}  # only endpoints with a request in flight
        self.latency: dict[str, float] = {}
        self.total = 0

    def started(self, endpoint: Endpoint) -> None:
        self.outstanding[endpoint.id] = self.outstanding.get(endpoint.id, 0) + 1
        self.total += 1

    def finished(self, endpoint: Endpoint, latency: float | None = None) -> None:
        left = self.outstanding.get(endpoint.id, 1) - 1
        if left > 0:
            self.outstanding[endpoint.id] = left
        else:
            self.outstanding.pop(endpoint.id, None)
        self.total -= 1
        if latency is not None:
            average = self.latency.get(endpoint.id)
            if average is None or latency > average:
                self.latency[endpoint.id] = latency
            else:
                self.latency[endpoint.id] = average + LATENCY_DECAY * (latency - average)

    def of(self, endpoint: Endpoint) -> int:
        return self.outstanding.get(endpoint.id, 0)

    def retain(self, ids: Collection[str]) -> None:
        """Forget endpoints that left (`ids` are those still there), but not while a request to one is in flight."""
        for gone in [i for i in self.latency if i not in ids and i not in self.outstanding]:
            del self.latency[gone]


class EndpointSet:
    """An immutable set of endpoints; strategies may keep structures built for it while it is the same."""

    __slots__ = ("endpoints", "ids", "load")

    def __init__(self, endpoints: Sequence[Endpoint], load: Load | None = None) -> None:
        self.endpoints = tuple(endpoints)
        self.ids = tuple(e.id for e in self.endpoints)  # membership: what a hash ring depends on
        self.load = load if load is not None else Load()

    def __len__(self) -> int:
        return len(self.endpoints)


NOTHING: frozenset[str] = frozenset()


class PickRequest(msgspec.Struct, frozen=True):
    """What a pick may depend on: a hash key (session, user, prompt prefix) for affinity, and the
    ids not to pick (those a retry already tried), which strategies skip without a filtered copy."""

    key: str | None = None
    exclude: frozenset[str] = NOTHING
