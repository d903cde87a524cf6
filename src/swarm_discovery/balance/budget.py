"""A retry budget (as Finagle and Envoy keep one): retries may add at most `ratio` of the requests
seen over the last `window` seconds, but `min_concurrent` retries may always be in flight, so that
a quiet client can still retry and a partial outage cannot multiply the load on what is left."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


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
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.in_flight = 0

    def _trim(self, now: float) -> None:
        for times in (self._requests, self._retries):
            while times and times[0] <= now - self.window:
                times.popleft()

    def request(self) -> None:
        self._requests.append(self._clock())

    def try_retry(self) -> bool:
        """Take a retry from the budget; pair a True with `retry_done()`."""
        now = self._clock()
        self._trim(now)
        if self.in_flight >= self.min_concurrent and len(self._retries) + 1 > self.ratio * len(self._requests):
            return False
        self._retries.append(now)
        self.in_flight += 1
        return True

    def retry_done(self) -> None:
        self.in_flight -= 1
