"""The one query processor every front asks (Consul's agent/discovery, in small).

A front parses its protocol into a `Query` and encodes the `Found` it gets back; which records
match, which are healthy, how they sort and when a blocking query returns are decided here
alone. A query names the topic it covers, so its answer is current for as long as that topic's
change index stays put: that is what response caches are keyed on, in every front.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ..locality import parse_near
from ..records import NodeView, ServiceSummary
from ..selector import compile_selector
from .published import Published
from .registry import CATALOG, NODES, Registry, service_topic

Kind = Literal["instances", "instance", "catalog", "nodes", "node"]
Items = list[Published] | Published | list[ServiceSummary] | list[NodeView] | NodeView


class Query(msgspec.Struct, frozen=True, gc=False):
    """What a front asks. Hashable: caches key on it, whatever the request looked like."""

    kind: Kind
    service: str = ""
    id: str = ""  # the instance (kind "instance") or node (kind "node")
    tags: tuple[str, ...] = ()
    selector: str | None = None  # CEL over `instance` and `node`
    include_all: bool = False  # unhealthy instances too
    near: str | None = None  # a zone, a region, or "lat,lon"
    limit: int | None = None
    node_kind: str | None = None  # compute, storage, network
    caller: str | None = None  # who asks (an ACL token's id), for the access checks to come

    @property
    def topic(self) -> str:
        if self.kind in ("instances", "instance"):
            return service_topic(self.service)
        return CATALOG if self.kind == "catalog" else NODES


class Found(msgspec.Struct, frozen=True, gc=False):
    items: Items
    index: int  # the change index of the query's topic: the answer is current while it stays


class Lookup:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def check(self, query: Query) -> None:
        """Raise BadRequest for what can never be answered (a selector that does not compile, a bad `near`)."""
        if query.selector is not None:
            compile_selector(query.selector)
        if query.near is not None:
            parse_near(query.near)

    def index(self, query: Query) -> int:
        return self.registry.topic_index(query.topic)

    def answer(self, query: Query) -> Found:
        registry = self.registry
        index = self.index(query)
        selector = compile_selector(query.selector) if query.selector is not None else None
        items: Items
        if query.kind == "instances":
            items = registry.instances(
                query.service,
                tags=query.tags,
                selector=selector,
                include_all=query.include_all,
                near=parse_near(query.near) if query.near is not None else None,
                limit=query.limit,
            )
        elif query.kind == "instance":
            items = registry.instance(query.service, query.id)
        elif query.kind == "catalog":
            items = registry.services()
        elif query.kind == "nodes":
            items = registry.nodes(selector=selector, kind=query.node_kind)
        else:
            items = registry.node(query.id)
        return Found(items, index)

    async def wait(self, query: Query, index: int, timeout: float) -> None:
        """Return once the query's topic moves past `index`, at `timeout`, or when the server stops."""
        await self.registry.wait(query.topic, index, timeout)
