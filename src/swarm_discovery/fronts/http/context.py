"""What handlers work with while the core runs."""

from __future__ import annotations

from ...acl import Acl
from ...core.core import Core
from ...core.lookup import Lookup
from ...core.registry import Registry
from .cache import ResponseCache
from .limits import Limits, LongReads


class Context:
    __slots__ = ("acl", "cache", "core", "long_reads", "lookup", "openapi", "registry")

    def __init__(self, core: Core, openapi: bytes, limits: Limits) -> None:
        self.core = core
        self.registry: Registry = core.registry
        self.lookup: Lookup = core.lookup
        self.acl: Acl = core.acl
        self.cache = ResponseCache(core.registry)
        self.long_reads = LongReads(limits)
        self.openapi = openapi
