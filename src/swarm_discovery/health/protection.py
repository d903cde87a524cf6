"""Protection against mass expiry (Eureka calls it self-preservation).

A TTL lapse is not expired at once: it waits one `window` first. If by then a large share of all
TTL checks (`share`, default over half) are waiting too, and there are enough of them to mean
something (`minimum`, default 10), the server takes the fault to be its own (a network cut
between it and the fleet), holds every lapse, and says so. Heartbeats take checks off the waiting
list; once few enough wait, the rest expire. A lone instance that stops heartbeating expires one
window after its TTL. Active probes are not held: failing probes are evidence, silence is not.
"""

from __future__ import annotations

from collections.abc import Hashable

import msgspec

from ..telemetry import EXPIRY_PROTECTION


class ExpirySettings(msgspec.Struct, frozen=True):
    share: float = 0.5
    minimum: int = 10
    window: float = 5.0


class ExpiryGuard:
    def __init__(self, settings: ExpirySettings | None = None) -> None:
        self.settings = settings or ExpirySettings()
        self._ttl_checks: set[Hashable] = set()
        self._waiting: set[Hashable] = set()
        self.active = False

    def expect(self, key: Hashable) -> None:
        self._ttl_checks.add(key)

    def forget(self, key: Hashable) -> None:
        self._ttl_checks.discard(key)
        self._waiting.discard(key)
        self._update()

    def lapsed(self, key: Hashable) -> None:
        self._waiting.add(key)
        self._update()

    def renewed(self, key: Hashable) -> None:
        self._waiting.discard(key)
        self._update()

    def expired(self, key: Hashable) -> None:
        self._waiting.discard(key)

    def holds(self) -> bool:
        return self.active

    def _update(self) -> None:
        waiting, total = len(self._waiting), len(self._ttl_checks)
        s = self.settings
        self.active = waiting >= s.minimum and total > 0 and waiting / total > s.share
        EXPIRY_PROTECTION.set(1 if self.active else 0)
