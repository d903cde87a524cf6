"""Writes a second per caller: a token bucket for each, the least recently seen forgotten first.

Every request that is not a GET (registrations, heartbeats, maintenance, nodes, reports) takes
one token from its caller's bucket, before its body is read; a caller whose bucket is empty is
answered 429 with Retry-After, and nothing of the request is done. A report batch counts as one
write, whatever it holds: it is at most 1,000 reports in 64 KiB, and the SDK sends one a second.
The caller is whatever string the front hands in (today the client address).

Buckets are kept for at most `MAX_CALLERS` callers. Forgetting one costs nothing in the common
case: a bucket idle for a second (`burst / rate`) is full again, the same as a new one, and the
caller forgotten is the one idle longest.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from ...buckets import Bucket
from ...errors import TooBusy

MAX_CALLERS = 16_384


class Rates:
    """Per-key token buckets of `rate` a second in bursts of one second's worth; rate 0 limits nothing."""

    def __init__(self, rate: float, keys: int = MAX_CALLERS, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.keys = keys
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()  # the least recently used first

    def take(self, key: str) -> None:
        """One token from `key`'s bucket, or `TooBusy` with the seconds until it has one."""
        if not self.rate:
            return
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket(self.burst, now)
            if len(buckets) > self.keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        wait = bucket.take(now, self.rate, self.burst)
        if wait:
            busy = TooBusy(f"too many writes from {key}: at most {self.rate:g} a second (--write-rate)")
            busy.retry_after = math.ceil(wait)
            raise busy

    def __len__(self) -> int:
        return len(self._buckets)
