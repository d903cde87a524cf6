"""Token buckets, one per key: `rate` tokens a second, at most `burst` saved up.

Shared by the probe limits (probes a second per registrant) and the HTTP front's write limits
(writes a second per caller). Each bucket is a (tokens, when) pair in one dict, with no object of
its own: taking a token is a lookup, a sum and a store. Tokens are counted down by whole ones, so
a burst is exact at any clock value (a time kept as a sum of intervals would not be, once the
clock is large). A bucket full again is no different from a new one: past `keys` buckets, a
quarter of them is forgotten, those nearest to full first, so that forgetting a caller gives it
at most what it would have had soon anyway, and a caller deep in debt is never let off by others
arriving.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_KEYS = 16_384
# Of a token: the time since a bucket was counted is a difference of two clock readings, each
# rounded to the clock's float spacing (2e-9 s a week after boot), so a token due now may come
# out a few millionths short; without slack it would be refused for a whole Retry-After second.
_SLACK = 1e-4


class Buckets(Generic[K]):
    def __init__(self, rate: float, burst: float, keys: int = MAX_KEYS) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"a bucket's rate must be a finite number above 0, not {rate}")
        self.keys = keys
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._held: dict[K, tuple[float, float]] = {}  # tokens left, and when they were counted

    def take(self, key: K, now: float) -> float:
        """Take a token from `key`'s bucket: 0.0 if it had one, else the seconds until it will (none taken)."""
        held = self._held.get(key)
        if held is None:
            tokens = self._burst
        else:
            tokens = held[0] + (now - held[1]) * self._rate
            if tokens > self._burst:
                tokens = self._burst
        if tokens < 1.0 - _SLACK:
            return (1.0 - tokens) / self._rate
        self._held[key] = (tokens - 1.0, now)
        if len(self._held) > self.keys:
            self._forget(now)
        return 0.0

    def forget(self, key: K) -> None:
        self._held.pop(key, None)

    def _forget(self, now: float) -> None:
        rate = self._rate
        fullest = heapq.nlargest(
            len(self._held) // 4 or 1, self._held.items(), key=lambda item: item[1][0] + (now - item[1][1]) * rate
        )
        for key, _ in fullest:
            del self._held[key]

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)
