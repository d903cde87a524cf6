"""Writes a second per caller: a token bucket for each, the least recently seen forgotten first.

Every request that is not a GET (registrations, heartbeats, maintenance, nodes, reports) takes
one token from its caller's bucket, before its body is read; a caller whose bucket is empty is
answered 429 with Retry-After, and nothing of the request is done. A report batch counts as one
write, whatever it holds: it is at most 1,000 reports in 64 KiB, and the SDK sends one a second.
The caller is whatever string the front hands in (today the client address).

Buckets are kept for at most `MAX_CALLERS` callers, those nearest to full forgotten first (see
buckets.py): a bucket idle for a second (`burst / rate`) is full again, the same as a new one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ...buckets import Buckets
from ...errors import TooBusy

MAX_CALLERS = 16_384


class Rates:
    """Per-key token buckets of `rate` a second in bursts of one second's worth; rate 0 limits nothing."""

    def __init__(self, rate: float, keys: int = MAX_CALLERS, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: Buckets[str] | None = Buckets(rate, rate, keys) if rate else None

    def take(self, key: str) -> None:
        """One token from `key`'s bucket, or `TooBusy` with the seconds until it has one."""
        if self._buckets is None:
            return
        wait = self._buckets.take(key, self._clock())
        if wait:
            busy = TooBusy(f"too many writes from {key}: at most {self.rate:g} a second (--write-rate)")
            busy.retry_after = math.ceil(wait)
            raise busy

    def __len__(self) -> int:
        return len(self._buckets) if self._buckets is not None else 0
