"""Token buckets, one per key: `rate` tokens a second, at most `burst` saved up.

Shared by the probe limits (probes a second per registrant) and the HTTP front's write limits
(writes a second per caller). Each bucket is one number, the time at which it is full again (the
generic cell rate algorithm, as Redis' CL.THROTTLE keeps it), so taking a token is a lookup and a
comparison, with no object per caller. A bucket full again is no different from a new one: past
`keys` buckets, a quarter of them is forgotten, those nearest to full first (the full ones, then
the ones that have waited longest), so that forgetting a caller gives it at most what it would
have had soon anyway, and a caller deep in debt is never let off by others arriving.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from operator import itemgetter
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_KEYS = 16_384
_SLACK = 1e-9  # seconds: sums of intervals are inexact, and a token due now is there


class Buckets(Generic[K]):
    def __init__(self, rate: float, burst: float, keys: int = MAX_KEYS) -> None:
        if rate <= 0:
            raise ValueError("a bucket's rate must be above 0")
        self.keys = keys
        self._interval = 1.0 / rate
        self._ahead = (max(burst, 1.0) - 1.0) * self._interval  # how far past now "full" may be, with a token left
        self._full: dict[K, float] = {}

    def take(self, key: K, now: float) -> float:
        """Take a token from `key`'s bucket: 0.0 if it had one, else the seconds until it will (none taken)."""
        full = self._full.get(key, now)
        if full < now:
            full = now
        wait = full - now - self._ahead
        if wait > _SLACK:
            return wait
        self._full[key] = full + self._interval
        if len(self._full) > self.keys:
            self._forget()
        return 0.0

    def forget(self, key: K) -> None:
        self._full.pop(key, None)

    def _forget(self) -> None:
        for key, _ in heapq.nsmallest(len(self._full) // 4 or 1, self._full.items(), key=itemgetter(1)):
            del self._full[key]

    def __contains__(self, key: object) -> bool:
        return key in self._full

    def __len__(self) -> int:
        return len(self._full)
