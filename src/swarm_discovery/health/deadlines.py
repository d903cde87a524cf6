"""Deadlines (TTL lapses, probe times): one heap and one task, not one sleeping task per timer.

Renewing pushes a new entry and leaves the old one in place; a popped entry that no longer
matches the key's current deadline is stale and skipped (lazy deletion keeps renewals O(log n)).
Stale entries would otherwise pile up (a heartbeat every second on a 30 s TTL leaves 30 per key),
so once they outnumber the live deadlines the heap is rebuilt from those: O(n) at most once per
n renewals. A callback that raises is logged, and the other deadlines still fire.
The clock is injected so tests can drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("swarm.health")
COMPACT_FLOOR = 64  # below this many entries a rebuild would cost more than the stale ones


class Deadlines:
    def __init__(
        self, on_expire: Callable[[Hashable, float], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_expire = on_expire
        self._clock = clock
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._seq = 0
        self._wake = asyncio.Event()

    def set(self, key: Hashable, seconds: float) -> None:
        self.set_at(key, self._clock() + seconds)

    def set_at(self, key: Hashable, due: float) -> None:
        self._due[key] = due
        self._seq += 1
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (due, self._seq, key))
        self._compact()

    def pending(self, key: Hashable) -> bool:
        return key in self._due

    def cancel(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._compact()

    def _compact(self) -> None:
        if len(self._heap) > max(2 * len(self._due), COMPACT_FLOOR):
            self._heap = [(due, seq, key) for seq, (key, due) in enumerate(self._due.items(), self._seq + 1)]
            self._seq += len(self._heap)
            heapq.heapify(self._heap)

    def now(self) -> float:
        return self._clock()

    def expire_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                try:
                    self._on_expire(key, due)
                except Exception:  # one bad callback must not stop every other timer
                    log.exception("deadline %s: its callback failed", key)

    def next_due_in(self) -> float | None:
        return self._heap[0][0] - self._clock() if self._heap else None

    async def run(self) -> None:
        while True:
            self.expire_due()
            wait = self.next_due_in()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=None if wait is None else max(wait, 0.0))
