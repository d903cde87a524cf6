"""A retry budget (as Finagle and Envoy keep one): retries may add at most `ratio` of the requests
seen over the last `window` seconds, but `min_concurrent` retries may always be in flight, so that
a quiet client can still retry and a partial outage cannot multiply the load on what is left.

Requests and retries are counted in BUCKETS slices of the window, so that counting one costs O(1)
and the memory is fixed whatever the rate; the window slides a slice at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BUCKETS = 10


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.2,
        min_concurrent: int = 3,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_concurrent = min_concurrent
        self.window = window
        self._clock = clock
        self._width = window / BUCKETS
        self._requests = [0] * BUCKETS
        self._retries = [0] * BUCKETS
        self._slice = int(clock() // self._width)  # the slice the last count went to
        self.in_flight = 0

    def _now(self) -> int:
        """The current slice's position in the counts, after clearing those the window left behind."""
        now = int(self._clock() // self._width)
        if now != self._slice:
            for gone in range(max(self._slice + 1, now - BUCKETS + 1), now + 1):
                self._requests[gone % BUCKETS] = 0
                self._retries[gone % BUCKETS] = 0
            self._slice = now
        return now % BUCKETS

    def request(self) -> None:
        self._requests[self._now()] += 1

    def try_retry(self) -> bool:
        """Take a retry from the budget; pair a True with `retry_done()`."""
        at = self._now()
        if self.in_flight >= self.min_concurrent and sum(self._retries) + 1 > self.ratio * sum(self._requests):
            return False
        self._retries[at] += 1
        self.in_flight += 1
        return True

    def retry_done(self) -> None:
        self.in_flight -= 1
