"""The instances of one service as endpoints, rebuilt only where a record changed.

Every registration (a PUT, maintenance) gives an instance's record a new `index`; heartbeat
metrics and health are live state that arrive without one. So an instance with the id and index
it had keeps its `Endpoint` object, whose live `queue_depth` is refreshed in place: a view that
moved only in metrics costs a few passes over the list and no allocation per instance, which is
what lets the pool and its strategies keep everything they built.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from ..records import InstanceView
from .endpoints import Endpoint

_ID = attrgetter("id")
_INDEX = attrgetter("index")
_METRICS = attrgetter("metrics")


class Members:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self.ids: frozenset[str] = frozenset()
        self._ids: list[str | None] = []
        self._indexes: list[int] = []

    def update(self, instances: Sequence[InstanceView]) -> bool:
        """Take the instances now; True when the membership (the set of ids) changed."""
        ids, indexes = list(map(_ID, instances)), list(map(_INDEX, instances))
        moved = ids != self._ids
        if moved or indexes != self._indexes:
            kept = {e.id: (e, index) for e, index in zip(self.endpoints, self._indexes, strict=True)}
            self.endpoints = [
                old[0] if (old := kept.get(i.id or "")) is not None and old[1] == i.index else Endpoint.from_instance(i)
                for i in instances
            ]
            self._ids, self._indexes = ids, indexes
        for endpoint, metrics in zip(self.endpoints, map(_METRICS, instances), strict=True):
            endpoint.queue_depth = metrics.get("queue_depth", 0.0)
            endpoint.metrics = metrics
        if not moved:
            return False
        members = frozenset(e.id for e in self.endpoints)
        changed, self.ids = members != self.ids, members
        return changed
