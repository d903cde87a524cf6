"""Weighted round robin by earliest deadline first (as Envoy does it): O(log n) a pick.

Each endpoint's next turn is due 1/weight after its last; the earliest due goes next. Over any
window, picks are proportional to `weight` and interleaved smoothly (no bursts to one endpoint).
The schedule survives a new set with the same ids and weights. Trade-off: weights are static
hints; like round robin it ignores how loaded an endpoint is.
"""

from __future__ import annotations

import heapq

from .endpoints import NOTHING, Endpoint, EndpointSet, PickRequest


class Weighted:
    def __init__(self) -> None:
        self._view: EndpointSet | None = None  # held, so its identity is never reused
        self._weights: list[int] = []
        self._heap: list[tuple[float, int]] = []

    def _schedule(self, view: EndpointSet) -> None:
        weights = [e.weight for e in view.endpoints]
        if view.ids != (self._view.ids if self._view is not None else ()) or weights != self._weights:
            # Start each endpoint at a deadline spread by its weight so the first round interleaves.
            self._heap = [(1.0 / w, i) for i, w in enumerate(weights)]
            heapq.heapify(self._heap)
            self._weights = weights
        self._view = view

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None:
        if not view.endpoints:
            return None
        if view is not self._view:
            self._schedule(view)
        heap, endpoints = self._heap, view.endpoints
        skip = request.exclude if request is not None else NOTHING
        passed = []  # excluded turns keep their deadlines
        while heap and endpoints[heap[0][1]].id in skip:
            passed.append(heapq.heappop(heap))
        chosen = None
        if heap:
            due, index = heap[0]
            heapq.heapreplace(heap, (due + 1.0 / endpoints[index].weight, index))
            chosen = endpoints[index]
        for entry in passed:
            heapq.heappush(heap, entry)
        return chosen
