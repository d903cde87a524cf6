"""Outlier detection from observed traffic (Envoy's outlier detection, simplified).

An endpoint is ejected after `consecutive` failures in a row, or when, with enough recent
requests, its failure rate is far above the pool's (more than `rate_margin` above the mean and
above half). An ejection lasts `base` seconds times the number of times it has been ejected,
capped at `cap`. At most `max_share` of the pool is ejected at once, but one always can be, even
in a pool of two. On return an endpoint takes traffic gradually over `slow_start` seconds.
Used twice: by each client for its own traffic, and by the server over all clients' reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import msgspec

from ..records import Ejection

WINDOW = 50  # recent outcomes kept per endpoint for the failure rate
MIN_REQUESTS = 20


class OutlierSettings(msgspec.Struct, frozen=True):
    consecutive: int = 5
    base: float = 30.0
    cap: float = 300.0
    max_share: float = 0.5
    rate_margin: float = 0.3
    slow_start: float = 30.0


class _Record:
    __slots__ = ("ejections", "failures_in_row", "recent", "returned_at")

    def __init__(self) -> None:
        self.failures_in_row = 0
        self.recent: deque[bool] = deque(maxlen=WINDOW)
        self.ejections = 0
        self.returned_at: float | None = None


class OutlierDetector:
    def __init__(self, settings: OutlierSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or OutlierSettings()
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self.ejected: dict[str, Ejection] = {}

    def forget(self, key: str) -> None:
        self._records.pop(key, None)
        self.ejected.pop(key, None)

    def observe(self, key: str, ok: bool, pool_size: int, refused: bool = False) -> Ejection | None:
        """Record one outcome; the new ejection when this one tipped the endpoint over.

        A refused connection is proof enough on its own: nothing listens there any more.
        """
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        record.recent.append(ok)
        record.failures_in_row = 0 if ok else record.failures_in_row + 1
        if ok or key in self.ejected:
            return None
        s = self.settings
        reason = None
        if refused:
            reason = "connection refused"
        elif record.failures_in_row >= s.consecutive:
            reason = f"{record.failures_in_row} failures in a row"
        elif len(record.recent) >= MIN_REQUESTS:
            rate = 1 - sum(record.recent) / len(record.recent)
            if rate > 0.5 and rate > self._pool_failure_rate() + s.rate_margin:
                reason = f"failure rate {rate:.0%}, far above the pool's"
        if reason is None or not self._may_eject(pool_size):
            return None
        record.ejections += 1
        until = self._clock() + min(s.base * record.ejections, s.cap)
        ejection = Ejection(reason=reason, until=until, count=record.ejections)
        self.ejected[key] = ejection
        record.failures_in_row = 0
        record.recent.clear()
        return ejection

    def _pool_failure_rate(self) -> float:
        rates = [1 - sum(r.recent) / len(r.recent) for r in self._records.values() if len(r.recent) >= MIN_REQUESTS]
        return sum(rates) / len(rates) if rates else 0.0

    def _may_eject(self, pool_size: int) -> bool:
        return not self.ejected or len(self.ejected) + 1 <= self.settings.max_share * pool_size

    def release_due(self) -> list[str]:
        """End the ejections whose time is up; the keys that came back."""
        now = self._clock()
        back = [key for key, ejection in self.ejected.items() if ejection.until <= now]
        for key in back:
            del self.ejected[key]
            record = self._records.get(key)
            if record is not None:
                record.returned_at = now
        return back

    def warmth(self, key: str) -> float:
        """1.0 normally; from 0 to 1 over `slow_start` seconds after an ejection ends."""
        record = self._records.get(key)
        if record is None or record.returned_at is None:
            return 1.0
        warm = (self._clock() - record.returned_at) / self.settings.slow_start if self.settings.slow_start else 1.0
        if warm >= 1.0:
            record.returned_at = None
            return 1.0
        return max(warm, 0.05)
