"""Encoded replies, as the shared `AnswerCache` keeps them, and the exact spellings that find them.

A reply is kept without its 2-byte id, in up to VARIANTS orders served in turn, so that a cached
service answer still spreads its askers over the instances as Consul's shuffling does. The
spellings are the fast path: a query whose bytes after the id match one answered before finds its
key without being parsed.
"""

from __future__ import annotations

from collections import OrderedDict

from ...core.lookup import Query
from .encode import Asked
from .settings import ALIASED_QUERY, ALIASES

Key = tuple[Query, Asked]  # the shared cache's key: what is asked, and how it is to be encoded


class DnsAnswer:
    __slots__ = ("_ends", "_turn", "body", "index", "topic")

    def __init__(self, topic: str, index: int, replies: list[bytes]) -> None:
        self.topic = topic
        self.index = index
        self.body = b"".join(reply[2:] for reply in replies)  # one object: its length is what it costs
        ends, end = [], 0
        for reply in replies:
            end += len(reply) - 2
            ends.append(end)
        self._ends = ends
        self._turn = 0

    def next(self) -> bytes:
        """The next order's reply, less its id."""
        ends = self._ends
        if len(ends) == 1:
            return self.body
        turn = self._turn
        self._turn = (turn + 1) % len(ends)
        return self.body[ends[turn - 1] if turn else 0 : ends[turn]]


class Spellings:
    """Query bytes (all but the id) to the key they were found to mean; the oldest forgotten first."""

    def __init__(self, bound: int = ALIASES) -> None:
        self._keys: OrderedDict[bytes, Key] = OrderedDict()
        self._bound = bound

    def get(self, raw: bytes) -> Key | None:
        return self._keys.get(raw)

    def remember(self, raw: bytes, key: Key) -> None:
        if len(raw) > ALIASED_QUERY or raw in self._keys:
            return
        self._keys[raw] = key
        if len(self._keys) > self._bound:
            self._keys.popitem(last=False)
