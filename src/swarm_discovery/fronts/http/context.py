"""What handlers work with, made once by the lifespan when the server starts."""

from __future__ import annotations

from ...core.registry import Registry
from .cache import ResponseCache


class Context:
    __slots__ = ("cache", "openapi", "registry")

    def __init__(self, registry: Registry, cache: ResponseCache, openapi: bytes) -> None:
        self.registry = registry
        self.cache = cache
        self.openapi = openapi
