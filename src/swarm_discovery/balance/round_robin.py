"""Round robin: each endpoint in turn.

Trade-off: perfectly even request counts, blind to how long requests take; a slow endpoint gets
as many requests as a fast one and its queue grows. Fails over only by leaving the view.
"""

from __future__ import annotations

from .view import Endpoint, PickRequest, View


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(self, view: View, request: PickRequest | None = None) -> Endpoint | None:
        if not view.endpoints:
            return None
        self._next += 1
        return view.endpoints[self._next % len(view.endpoints)]
