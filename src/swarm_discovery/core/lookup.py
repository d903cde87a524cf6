"""The one query processor every front asks (Consul's agent/discovery, in small).

A front parses its protocol into a `Query` and encodes the `Found` it gets back; which records
match, which are healthy, how they sort and when a blocking query returns are decided here
alone. A query names the topic it covers, so its answer is current for as long as that topic's
change index stays put: that is what response caches are keyed on, in every front.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec

from ..acl import Acl
from ..errors import BadRequest, TooBusy
from ..locality import parse_near
from ..records import NodeView, ServiceSummary
from ..selector import Selector, compile_selector
from .published import Published, admitted
from .registry import CATALOG, NODES, Registry, service_topic

# A selector that CEL evaluates (or any over a large service) is evaluated a slice at a time,
# other requests served in between, and one query's evaluation is held to a budget. CEL holds
# the GIL, so a thread would not help; one record's evaluation is bounded by CEL's 10,000
# iterations over capability strings of at most 1,024 characters (tens of milliseconds).
SLICED_AT = 2048  # records above which even generated-Python selectors are sliced
SLICE_SECONDS = 0.02
SLICE_PAUSE = 0.001  # a pause, not just a turn: the HTTP server's own threads need the GIL too
SELECTOR_BUDGET = 1.0  # seconds of evaluation one query may take; past it, a 400
MAX_WAITING = 16  # costly queries waiting their turn (one is evaluated at a time); past it, a 429

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
    # Who asks (`Caller.key`), for a listing filtered to what that caller may read; None when
    # the caller reads everything, so that every such caller shares one answer.
    caller: str | None = None

    @property
    def topic(self) -> str:
        if self.kind in ("instances", "instance"):
            return service_topic(self.service)
        return CATALOG if self.kind == "catalog" else NODES


class Found(msgspec.Struct, frozen=True, gc=False):
    items: Items
    index: int  # the change index of the query's topic: the answer is current while it stays


class Lookup:
    def __init__(self, registry: Registry, acl: Acl) -> None:
        self.registry = registry
        self.acl = acl
        self._turn = asyncio.Lock()  # one costly evaluation at a time: they cannot add up
        self._waiting = 0

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
            if query.caller is not None:
                policy = self.acl.policy_of(query.caller)
                items = [s for s in items if policy.allows("services", s.name, "read")]
        elif query.kind == "nodes":
            items = registry.nodes(selector=selector, kind=query.node_kind)
            if query.caller is not None:
                policy = self.acl.policy_of(query.caller)
                items = [n for n in items if policy.allows("nodes", n.id or "", "read")]
        else:
            items = registry.node(query.id)
        return Found(items, index)

    async def find(self, query: Query) -> Found:
        """`answer`, with a costly selector evaluated in slices and held to SELECTOR_BUDGET."""
        if query.kind != "instances" or query.selector is None:
            return self.answer(query)
        selector = compile_selector(query.selector)
        if not selector.in_cel and self.registry.size(query.service) < SLICED_AT:
            return self.answer(query)
        states = self.registry.published(query.service)
        if self._waiting >= MAX_WAITING:
            raise TooBusy("selector: too many costly selector queries are waiting; try again shortly")
        index = self.index(query)  # of what `states` is (immutable versions): the answer is current at it
        self._waiting += 1
        try:
            async with self._turn:
                found = await _select(states, query, selector)
        finally:
            self._waiting -= 1
        near = parse_near(query.near) if query.near is not None else None
        return Found(self.registry.ordered(found, near, query.limit), index)

    async def wait(self, query: Query, index: int, timeout: float) -> None:
        """Return once the query's topic moves past `index`, at `timeout`, or when the server stops."""
        await self.registry.wait(query.topic, index, timeout)


async def _select(states: list[Published], query: Query, selector: Selector) -> list[Published]:
    """The versions a listing shows, evaluated a slice at a time; a 400 once over the budget.

    The budget counts this query's own evaluation, not the other requests served in between.
    """
    found = []
    spent, mark = 0.0, time.monotonic()
    for count, state in enumerate(states, 1):
        if admitted(state, tags=query.tags, selector=selector, include_all=query.include_all):
            found.append(state)
        slice_took = time.monotonic() - mark
        if spent + slice_took > SELECTOR_BUDGET:
            raise BadRequest(
                f"selector: took more than {SELECTOR_BUDGET:g} s over {count} of {len(states)} instances;"
                " it is too costly for this service"
            )
        if slice_took > SLICE_SECONDS:
            spent += slice_took
            await asyncio.sleep(SLICE_PAUSE)  # let the other requests through
            mark = time.monotonic()
    return found
