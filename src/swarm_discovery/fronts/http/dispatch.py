"""Finding the endpoint for a method and path.

A path is split on "/" and compared, segment by segment, with the few templates that have as many
segments: a dict lookup and a handful of string comparisons. Starlette's router tries a regex per
route and wraps each call in two layers of exception middleware; together they cost about half
of a registration's in-process time, so `fronts.http.front.Front` dispatches with this table instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Protocol


class Routable(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def handler(self) -> Any: ...

    @property
    def access(self) -> Any: ...


def _picker(positions: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """segments -> a tuple of the segments at `positions`, picked in C by `itemgetter`."""
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        one = itemgetter(positions[0])
        return lambda segments: (one(segments),)
    return lambda segments: ()


class _Template:
    __slots__ = ("literals", "methods", "names", "path", "pick_literals", "pick_values")

    def __init__(self, path: str) -> None:
        self.path = path
        segments = path.split("/")
        literal = [i for i, s in enumerate(segments) if not s.startswith("{")]
        param = [i for i, s in enumerate(segments) if s.startswith("{")]
        self.literals = tuple(segments[i] for i in literal)
        self.names = tuple(segments[i][1:-1] for i in param)
        self.pick_literals = _picker(literal)
        self.pick_values = _picker(param)
        self.methods: dict[str, Routable] = {}

    def bind(self, segments: list[str]) -> dict[str, str] | None:
        if self.pick_literals(segments) != self.literals:
            return None
        values = self.pick_values(segments)
        # Equal lengths by construction; a keyword (strict=) would make zip's call a slow one, on every request.
        return None if "" in values else dict(zip(self.names, values))  # noqa: B905


class Found:
    """An endpoint with the path parameters it was called with."""

    __slots__ = ("endpoint", "params")

    def __init__(self, endpoint: Routable, params: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.params = params


class WrongMethod:
    """The path exists, but not for this method."""

    __slots__ = ("allowed",)

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed


class RouteTable:
    def __init__(self, endpoints: Sequence[Routable]) -> None:
        templates: dict[str, _Template] = {}
        for endpoint in endpoints:
            template = templates.setdefault(endpoint.path, _Template(endpoint.path))
            template.methods[endpoint.method] = endpoint
            if endpoint.method == "GET":
                template.methods.setdefault("HEAD", endpoint)
        self.methods = frozenset(m for template in templates.values() for m in template.methods)
        self._by_length: dict[int, list[_Template]] = {}
        for template in templates.values():
            self._by_length.setdefault(len(template.path.split("/")), []).append(template)

    def find(self, method: str, path: str) -> Found | WrongMethod | None:
        """The endpoint for `method` on `path`; `WrongMethod` when only other methods serve it; None if none."""
        segments = path.split("/")
        for template in self._by_length.get(len(segments), ()):
            params = template.bind(segments)
            if params is None:
                continue
            endpoint = template.methods.get(method)
            if endpoint is None:
                return WrongMethod(sorted(template.methods))
            return Found(endpoint, params)
        return None
