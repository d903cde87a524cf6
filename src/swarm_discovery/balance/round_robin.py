"""Round robin: each endpoint in turn.

Trade-off: perfectly even request counts, blind to how long requests take; a slow endpoint gets
as many requests as a fast one and its queue grows. Fails over only by leaving the view.
"""

from __future__ import annotations

from .endpoints import NOTHING, Endpoint, EndpointSet, PickRequest


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(self, view: EndpointSet, request: PickRequest | None = None) -> Endpoint | None:
        endpoints = view.endpoints
        skip = request.exclude if request is not None else NOTHING
        for _ in range(len(endpoints)):
            self._next += 1
            endpoint = endpoints[self._next % len(endpoints)]
            if endpoint.id not in skip:
                return endpoint
        return None
