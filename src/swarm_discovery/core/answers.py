"""Encoded answers, kept until the change index of the topic they cover moves.

Keyed by what was asked (a `Query` with the name of its encoding), not by how the request
spelled it, so every front shares the one bound: `MAX_ENTRIES` answers and `MAX_BYTES` of them,
the least recently stored going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

MAX_ENTRIES = 4096
MAX_BYTES = 64 * 1024 * 1024


class Encoded(Protocol):
    topic: str
    index: int
    body: bytes


A = TypeVar("A", bound=Encoded)


class AnswerCache(Generic[A]):
    def __init__(
        self, topic_index: Callable[[str], int], max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> None:
        self._topic_index = topic_index
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, A] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable) -> A | None:
        """The answer stored under `key` if it is still current."""
        answer = self._answers.get(key)
        if answer is None or self._topic_index(answer.topic) != answer.index:
            return None
        return answer

    def put(self, key: Hashable, answer: A) -> None:
        old = self._answers.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._answers[key] = answer
        self.bytes += len(answer.body)
        while len(self._answers) > self._max_entries or (self.bytes > self._max_bytes and len(self._answers) > 1):
            _, dropped = self._answers.popitem(last=False)
            self.bytes -= len(dropped.body)

    def __len__(self) -> int:
        return len(self._answers)
