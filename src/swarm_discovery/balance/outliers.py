"""Outlier detection from observed traffic (Envoy's outlier detection, simplified).

An endpoint is ejected after `consecutive` failures in a row, or when, with enough recent
requests, its failure rate is far above the pool's (more than `rate_margin` above the mean and
above half). An ejection lasts `base` seconds times the number of times it has been ejected,
capped at `cap`. At most `max_share` of the pool is ejected at once, but one always can be, even
in a pool of two. On return an endpoint takes traffic gradually over `slow_start` seconds.
Used twice: by each client for its own traffic, and by the server, which judges each reporter's
reports by the same rules and ejects through `eject` when enough reporters agree (`quorum.py`).

An observation costs O(1) whatever the pool's size: each record counts the failures in its window
as the window slides, and the pool's mean failure rate is a running sum, kept exact in integers
(each rate scaled by a common multiple of every window length) so that it never drifts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Collection

import msgspec

from ..records import Ejection

WINDOW = 50  # recent outcomes kept per endpoint for the failure rate
MIN_REQUESTS = 20
_SCALE = math.lcm(*range(MIN_REQUESTS, WINDOW + 1))  # failures x _SCALE // n is exact for any window n
_PER = {n: _SCALE // n for n in range(MIN_REQUESTS, WINDOW + 1)}


class OutlierSettings(msgspec.Struct, frozen=True):
    consecutive: int = 5
    base: float = 30.0
    cap: float = 300.0
    max_share: float = 0.5
    rate_margin: float = 0.3
    slow_start: float = 30.0


class _Record:
    __slots__ = ("ejections", "failures", "failures_in_row", "recent", "returned_at")

    def __init__(self) -> None:
        self.failures_in_row = 0
        self.recent: deque[bool] = deque(maxlen=WINDOW)
        self.failures = 0  # in `recent`
        self.ejections = 0
        self.returned_at: float | None = None

    def scaled_rate(self) -> int:
        """Its failure rate x _SCALE, or 0 while it has too few recent requests to count."""
        n = len(self.recent)
        return self.failures * _PER[n] if n >= MIN_REQUESTS else 0


class OutlierDetector:
    def __init__(self, settings: OutlierSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or OutlierSettings()
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self.ejected: dict[str, Ejection] = {}
        self._rated = 0  # records with at least MIN_REQUESTS recent outcomes
        self._rate_sum = 0  # their scaled failure rates
        self._next_release = math.inf  # the earliest `until` among the ejected
        self.warming: set[str] = set()  # back from an ejection, still in slow start: warmth() < 1

    def _count(self, record: _Record, sign: int) -> None:
        if len(record.recent) >= MIN_REQUESTS:
            self._rated += sign
            self._rate_sum += sign * record.scaled_rate()

    def forget(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            self._count(record, -1)
        self.ejected.pop(key, None)
        self.warming.discard(key)

    def retain(self, keys: Collection[str]) -> None:
        """Forget every endpoint but `keys` (those in the pool, and those with a request in flight)."""
        for gone in [key for key in self._records if key not in keys]:
            self.forget(gone)
        for gone in [key for key in self.ejected if key not in keys]:
            del self.ejected[gone]

    def observe(self, key: str, ok: bool, pool_size: int, refused: bool = False) -> Ejection | None:
        """Record one outcome; the new ejection when this one tipped the endpoint over.

        A refused connection is proof enough on its own: nothing listens there any more.
        """
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        elif ok and not record.failures and len(record.recent) == WINDOW:
            return None  # the common case, a success among successes, changes nothing
        self._count(record, -1)
        if len(record.recent) == WINDOW:
            record.failures -= not record.recent[0]  # about to slide out of the window
        record.recent.append(ok)
        record.failures += not ok
        self._count(record, 1)
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
            rate = record.failures / len(record.recent)
            if rate > 0.5 and rate > self._rate_sum / (_SCALE * self._rated) + s.rate_margin:
                reason = f"failure rate {rate:.0%}, far above the pool's"
        return self.eject(key, reason, pool_size) if reason is not None else None

    def eject(self, key: str, reason: str, pool_size: int) -> Ejection | None:
        """Eject `key` for `reason`, unless it is out already or the pool has its share out."""
        if key in self.ejected or not self._may_eject(pool_size):
            return None
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        s = self.settings
        record.ejections += 1
        until = self._clock() + min(s.base * record.ejections, s.cap)
        ejection = Ejection(reason=reason, until=until, count=record.ejections)
        self.ejected[key] = ejection
        self._next_release = min(self._next_release, until)
        self._count(record, -1)
        record.failures_in_row = 0
        record.failures = 0
        record.recent.clear()
        return ejection

    def _may_eject(self, pool_size: int) -> bool:
        return not self.ejected or len(self.ejected) + 1 <= self.settings.max_share * pool_size

    def release_due(self) -> list[str]:
        """End the ejections whose time is up; the keys that came back."""
        now = self._clock()
        if now < self._next_release:  # checked before every pick: nothing to scan until one is due
            return []
        back = [key for key, ejection in self.ejected.items() if ejection.until <= now]
        for key in back:
            del self.ejected[key]
            record = self._records.get(key)
            if record is not None:
                record.returned_at = now
                self.warming.add(key)
        self._next_release = min((e.until for e in self.ejected.values()), default=math.inf)
        return back

    def warmth(self, key: str) -> float:
        """1.0 normally; from 0 to 1 over `slow_start` seconds after an ejection ends."""
        record = self._records.get(key)
        if record is None or record.returned_at is None:
            return 1.0
        warm = (self._clock() - record.returned_at) / self.settings.slow_start if self.settings.slow_start else 1.0
        if warm >= 1.0:
            record.returned_at = None
            self.warming.discard(key)
            return 1.0
        return max(warm, 0.05)
