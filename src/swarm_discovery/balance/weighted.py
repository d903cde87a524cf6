"""Weighted round robin by earliest deadline first (as Envoy does it): O(log n) a pick.

Each endpoint's next turn is due 1/weight after its last; the earliest due goes next. Over any
window, picks are proportional to `weight` and interleaved smoothly (no bursts to one endpoint).
Trade-off: weights are static hints; like round robin it ignores how loaded an endpoint is.
"""

from __future__ import annotations

import heapq

from .view import Endpoint, PickRequest, View


class Weighted:
    def __init__(self) -> None:
        self._endpoints: tuple[Endpoint, ...] | None = None  # held, so its identity is never reused
        self._heap: list[tuple[float, int]] = []

    def pick(self, view: View, request: PickRequest | None = None) -> Endpoint | None:
        if not view.endpoints:
            return None
        if view.endpoints is not self._endpoints:
            self._endpoints = view.endpoints
            # Start each endpoint at a deadline spread by its weight so the first round interleaves.
            self._heap = [(1.0 / e.weight, i) for i, e in enumerate(view.endpoints)]
            heapq.heapify(self._heap)
        due, index = self._heap[0]
        heapq.heapreplace(self._heap, (due + 1.0 / view.endpoints[index].weight, index))
        return view.endpoints[index]
