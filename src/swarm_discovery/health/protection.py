"""Protection against mass expiry (Eureka calls it self-preservation).

A TTL lapse is not expired at once: it waits one `window` first. If by then a large share of all
TTL checks (`share`, default over half) are waiting too, and there are enough of them to mean
something (`minimum`, default 10), the server takes the fault to be its own (a network cut
between it and the fleet), holds every lapse, and says so. Heartbeats take checks off the waiting
list; once few enough wait, the rest expire. A lone instance that stops heartbeating expires one
window after its TTL. Active probes are not held: failing probes are evidence, silence is not.

A network cut silences many registrants at once; one registrant's own fleet going quiet is that
registrant's outage, and must not hold everyone else's dead instances in the listings. So the
lapses must span at least `owners` registrants (default 3), and each registrant counts for at
most `minimum / owners` (rounded up) of its checks, lapsed or not, in both the minimum and the
share: a registrant with thousands of instances weighs no more than one with a few.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import msgspec

from ..telemetry import EXPIRY_PROTECTION


class ExpirySettings(msgspec.Struct, frozen=True):
    share: float = 0.5
    minimum: int = 10
    window: float = 5.0
    owners: int = 3


class _Tally:
    """Checks per registrant, and their sum with each registrant's count capped."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self.counts: dict[str, int] = {}
        self.capped = 0

    def add(self, registrant: str) -> None:
        count = self.counts.get(registrant, 0)
        self.counts[registrant] = count + 1
        self.capped += count < self._cap

    def remove(self, registrant: str) -> None:
        count = self.counts[registrant]
        if count > 1:
            self.counts[registrant] = count - 1
        else:
            del self.counts[registrant]
        self.capped -= count <= self._cap


class ExpiryGuard:
    def __init__(self, settings: ExpirySettings | None = None) -> None:
        self.settings = s = settings or ExpirySettings()
        cap = max(math.ceil(s.minimum / max(s.owners, 1)), 1)
        self._registrants: dict[Hashable, str] = {}  # every TTL check's registrant
        self._waiting: set[Hashable] = set()
        self._all = _Tally(cap)
        self._lapsed = _Tally(cap)
        self.active = False

    def expect(self, key: Hashable, registrant: str) -> None:
        self.forget(key)
        self._registrants[key] = registrant
        self._all.add(registrant)
        self._update()

    def forget(self, key: Hashable) -> None:
        if key not in self._registrants:
            return
        self.renewed(key)
        self._all.remove(self._registrants.pop(key))
        self._update()

    def lapsed(self, key: Hashable) -> None:
        registrant = self._registrants.get(key)
        if registrant is not None and key not in self._waiting:
            self._waiting.add(key)
            self._lapsed.add(registrant)
        self._update()

    def renewed(self, key: Hashable) -> None:
        if key in self._waiting:
            self._waiting.discard(key)
            self._lapsed.remove(self._registrants[key])
        self._update()

    def expired(self, key: Hashable) -> None:
        self.renewed(key)

    def holds(self) -> bool:
        return self.active

    def _update(self) -> None:
        s, lapsed, total = self.settings, self._lapsed.capped, self._all.capped
        self.active = (
            len(self._lapsed.counts) >= s.owners and lapsed >= s.minimum and total > 0 and lapsed / total > s.share
        )
        EXPIRY_PROTECTION.set(1 if self.active else 0)
