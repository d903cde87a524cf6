"""Encoded answers, cached until the change index of what they cover moves.

A read stores its encoded answer under its path and query together with its topic and the
topic's index; `fronts.http.front.Front` serves a current one before any routing or parsing.
"""

from __future__ import annotations

from collections import OrderedDict

from ...core.registry import Registry
from ...telemetry import REQUESTS
from .call import asgi_headers, json_reply

CACHE_SIZE = 4096
Key = tuple[str, str]  # path, query string


class Answer:
    __slots__ = ("asgi_headers", "body", "headers", "index", "requests", "topic")

    def __init__(self, topic: str, index: int, body: bytes, route: str) -> None:
        self.topic = topic
        self.index = index
        self.body = body
        self.headers = json_reply(body, index).headers
        self.asgi_headers = asgi_headers(self.headers, body)
        self.requests = REQUESTS.series("GET", route, 200)


class ResponseCache:
    def __init__(self, registry: Registry, size: int = CACHE_SIZE) -> None:
        self._registry = registry
        self._size = size
        self._answers: OrderedDict[Key, Answer] = OrderedDict()

    def get(self, key: Key) -> Answer | None:
        answer = self._answers.get(key)
        if answer is None or self._registry.topic_index(answer.topic) != answer.index:
            return None
        return answer

    def put(self, key: Key, answer: Answer) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        if len(self._answers) > self._size:
            self._answers.popitem(last=False)
