"""A local store's change feed: committed batches fanned out to watchers, with a bounded history.

A watch may start a little in the past (a consumer resuming after a hiccup): the feed keeps the
latest batches, up to `HISTORY_BATCHES` and `HISTORY_BYTES` of values, and a watch from before
them raises `Compacted`, as etcd does after a compaction. A watcher that falls more than the
history behind is cut off the same way, so a stuck consumer holds no unbounded backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from operator import attrgetter

from .protocol import Compacted, WatchBatch

HISTORY_BATCHES = 4096
# Values nobody else holds (the registry keeps what it decoded, not the bytes): every MiB here is
# a MiB of the server's memory, for watches from the past, which only a hiccup makes.
HISTORY_BYTES = 4 * 1024 * 1024


_KEY, _VALUE = attrgetter("key"), attrgetter("value")


def _size(batch: WatchBatch) -> int:
    # Mapped, not a generator: no Python runs per event, and a batch may hold thousands.
    events = batch.events
    return sum(map(len, map(_KEY, events))) + sum(map(len, filter(None, map(_VALUE, events))))


class _Watcher:
    __slots__ = ("backlog", "behind", "wake")

    def __init__(self) -> None:
        self.backlog: deque[WatchBatch] = deque()
        self.wake = asyncio.Event()
        self.behind = False


class Feed:
    def __init__(self, revision: int, max_batches: int = HISTORY_BATCHES, max_bytes: int = HISTORY_BYTES) -> None:
        self.revision = revision  # of the last batch published
        self._history: deque[tuple[WatchBatch, int]] = deque()
        self._bytes = 0
        self._floor = revision  # the history holds every batch after this revision
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._watchers: set[_Watcher] = set()
        self._closed = False

    def publish(self, batch: WatchBatch) -> None:
        size = _size(batch)
        self._history.append((batch, size))
        self._bytes += size
        while len(self._history) > self._max_batches or (self._bytes > self._max_bytes and len(self._history) > 1):
            dropped, dropped_size = self._history.popleft()
            self._bytes -= dropped_size
            self._floor = dropped.revision
        self.revision = batch.revision
        for watcher in self._watchers:
            if len(watcher.backlog) >= self._max_batches:
                watcher.behind = True
            else:
                watcher.backlog.append(batch)
            watcher.wake.set()

    def _since(self, from_revision: int) -> list[WatchBatch]:
        if from_revision <= self._floor:
            raise Compacted(f"revision {from_revision} is compacted: the feed starts after {self._floor}")
        batches = [batch for batch, _ in self._history if batch.revision >= from_revision]
        if batches and batches[0].events and batches[0].events[0].revision < from_revision:
            first = batches[0]  # a batch spans several revisions: start inside it
            batches[0] = WatchBatch(first.revision, [e for e in first.events if e.revision >= from_revision])
        return batches

    async def watch(self, from_revision: int) -> AsyncIterator[WatchBatch]:
        watcher = _Watcher()
        if from_revision <= self.revision:
            watcher.backlog.extend(self._since(from_revision))
        self._watchers.add(watcher)
        try:
            while True:
                while watcher.backlog:
                    yield watcher.backlog.popleft()
                if watcher.behind:
                    raise Compacted("the watcher fell behind the feed's history")
                if self._closed:
                    return  # after everything published before the close
                watcher.wake.clear()
                await watcher.wake.wait()
        finally:
            self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watch (after what it has not read yet)."""
        self._closed = True
        for watcher in self._watchers:
            watcher.wake.set()
