"""The HTTP face of the answer cache: encoded JSON with its headers, found by the raw request.

`fronts.http.front.Front` serves a GET whose exact path and query string name a current answer
before any routing or parsing. Those spellings are aliases of a `Query`: requests that differ only
in junk parameters or their order share one encoding, and the aliases are bounded on their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from ...core.answers import AnswerCache
from ...core.registry import Registry
from ...telemetry import REQUESTS
from .headers import Headers, asgi_headers

MAX_ALIASES = 16384
Raw = tuple[str, ...]  # path, query string, and with ACLs on the caller (`Caller.key`)


class Answer:
    __slots__ = ("asgi_headers", "body", "headers", "index", "requests", "topic")

    def __init__(self, topic: str, index: int, body: bytes, headers: Headers, route: str) -> None:
        self.topic = topic
        self.index = index
        self.body = body
        self.headers = headers
        self.asgi_headers = asgi_headers(self.headers, body)
        self.requests = REQUESTS.series("GET", route, 200)


class ResponseCache:
    def __init__(self, registry: Registry, max_aliases: int = MAX_ALIASES) -> None:
        self.answers: AnswerCache[Answer] = AnswerCache(registry.topic_index)
        self._aliases: OrderedDict[Raw, Hashable] = OrderedDict()
        self._max_aliases = max_aliases

    def get_raw(self, raw: Raw) -> Answer | None:
        key = self._aliases.get(raw)
        return self.answers.get(key) if key is not None else None

    def alias(self, raw: Raw, key: Hashable) -> None:
        if self._aliases.get(raw) == key:
            return
        self._aliases[raw] = key
        if len(self._aliases) > self._max_aliases:
            self._aliases.popitem(last=False)
