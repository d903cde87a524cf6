"""The change index, and everything that follows it: topics, waiters, and the history.

Every change takes the next index. It touches *topics* ("catalog", "service/NAME", "nodes"): each
topic remembers the index of its last change and wakes whoever waits on it (blocking queries,
watch streams), and response caches are valid while a topic's index is unchanged. Changes to
instances also go into a bounded history, from which a watch stream resumes.

Only the latest `RECENT` changes keep the version they made (up to a quarter more: they age a
batch at a time, which costs no Python per change): a stream that keeps up replays each version
exactly, while an older change holds just which instance it touched (a `Change`), so the history
never keeps 50,000 superseded versions alive. Replaying those, the registry sends what the
instance is now, once, at its last change (see `Registry.history_since`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from itertools import starmap
from operator import attrgetter

import msgspec

from .published import Published

HISTORY_SIZE = 50_000
RECENT = 4096


class Event(msgspec.Struct, frozen=True, gc=False):
    """One change to one instance; `state` is None when it left (deregistered).

    Not tracked by the garbage collector (it can hold no cycle): the history keeps thousands.
    """

    index: int
    service: str
    id: str
    state: Published | None


class Change(msgspec.Struct, frozen=True, gc=False):
    """An older change to one instance, without the version it made (a later change replaced it,
    or that version is the instance's current one)."""

    index: int
    service: str
    id: str


_named = attrgetter("index", "service", "id")


class _Waiting:
    """Everyone blocked on one topic: one future, dropped when the last of them leaves."""

    __slots__ = ("count", "future")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.count = 0


class ChangeLog:
    def __init__(self, history_size: int = HISTORY_SIZE, recent: int | None = None) -> None:
        self.index = 0
        self._topics: dict[str, int] = {}
        self._waiters: dict[str, _Waiting] = {}
        self.closed = False
        self._recent: list[Event] = []
        recent = min(RECENT if recent is None else recent, history_size)
        self._aging = max(1, recent // 4)  # how many age at once
        self._age_at = recent + self._aging
        self._older: deque[Change] = deque(maxlen=history_size - recent)
        self._floor = 0  # the history holds every event after this index

    def restart_at(self, index: int) -> None:
        """After loading the store: indexes go on from here, every topic is current at it (the load
        touched them at their records' own revisions, in no useful order), and no history reaches back."""
        self.index = index
        for topic in self._topics:
            self._topics[topic] = index
        self._recent.clear()
        self._older.clear()
        self._floor = index

    def next(self) -> int:
        self.index += 1
        return self.index

    def advance(self, at_least: int) -> int:
        """The next index, but no lower than `at_least` (a store revision: with no live changes
        in between, the index is the store's revision)."""
        index = self.index + 1
        self.index = index = at_least if at_least > index else index
        return index

    def topic(self, name: str) -> int:
        return self._topics.get(name, 0)

    def touch(self, topics: Iterable[str], index: int) -> None:
        current, waiters = self._topics, self._waiters
        for topic in topics:
            current[topic] = index
            if topic in waiters:
                waiting = waiters.pop(topic)
                if not waiting.future.done():
                    waiting.future.set_result(None)

    async def wait(self, topic: str, index: int, timeout: float) -> None:
        """Return once `topic` moves away from `index` (forwards, or back after a restart), at
        timeout, or when the log closes (the server is stopping)."""
        if self.closed or self.topic(topic) != index:
            return
        waiting = self._waiters.get(topic)
        if waiting is None:
            waiting = self._waiters[topic] = _Waiting(asyncio.get_running_loop().create_future())
        waiting.count += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiting.future), timeout)
        finally:
            waiting.count -= 1
            if not waiting.count and self._waiters.get(topic) is waiting:
                del self._waiters[topic]  # nobody waits on it any more: a topic never touched leaves nothing

    @property
    def waiting_topics(self) -> int:
        return len(self._waiters)

    def record(self, event: Event) -> None:
        recent = self._recent
        recent.append(event)
        if len(recent) >= self._age_at:
            self._age()

    def _age(self) -> None:
        """The oldest recent changes give up their versions; the history drops what falls out of it."""
        recent, older = self._recent, self._older
        aged = recent[: self._aging]
        del recent[: self._aging]
        dropped = len(older) + len(aged) - (older.maxlen or 0)
        if dropped > 0:  # the last change to fall out is the floor
            self._floor = older[dropped - 1].index if dropped <= len(older) else aged[dropped - len(older) - 1].index
        older.extend(starmap(Change, map(_named, aged)))

    def since(self, index: int) -> list[Event | Change] | None:
        """Changes after `index`, oldest first; None when the history no longer reaches back that far."""
        if index < self._floor or index > self.index:
            return None
        events: list[Event | Change] = []
        for event in reversed(self._recent):
            if event.index <= index:
                break
            events.append(event)
        else:
            for change in reversed(self._older):
                if change.index <= index:
                    break
                events.append(change)
        events.reverse()
        return events

    def close(self) -> None:
        """Wake every waiter for good: blocking queries answer and streams end."""
        self.closed = True
        for waiting in self._waiters.values():
            if not waiting.future.done():
                waiting.future.set_result(None)
        self._waiters.clear()
