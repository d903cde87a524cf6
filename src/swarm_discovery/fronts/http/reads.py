"""Reads: a `Query` for the lookup, blocking with `index` and `wait`, encoded answers cached.

Reads never touch the store. A blocking query's answer is cached under its query, so that many
watchers woken by one change share one encoding. A blocking query holds a long-read slot
(`limits.py`) while it waits.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ...acl import Section
from ...core.lookup import Found, Query
from ...core.published import Published
from ...telemetry import WATCHERS
from .cache import Answer
from .call import Call, Reply
from .headers import Headers, json_headers
from .inputs import integer, wait_seconds

_encode = msgspec.json.Encoder().encode


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def encode(found: Found) -> bytes:
    items = found.items
    if isinstance(items, Published):
        return items.json
    if isinstance(items, list) and items and isinstance(items[0], Published):
        return json_array([state.json for state in items])
    return _encode(items)


class Encoding(msgspec.Struct, frozen=True):
    """How a front writes a `Found` out: cached answers are keyed by the query and this name."""

    name: str
    encode: Callable[[Found], bytes]
    headers: Callable[[int], Headers]


NATIVE = Encoding("json", encode, json_headers)


def filtered_for(call: Call, section: Section) -> str | None:
    """The `Query.caller` of a listing of `section`: None when the caller may read all of it."""
    return None if call.caller.policy.reads_all(section) else call.caller.key


async def read(call: Call, query: Query, encoding: Encoding = NATIVE) -> Reply:
    """Answer `query`, blocking first when the request carries `index`."""
    context = call.context
    lookup = context.lookup
    wait = wait_seconds(call)
    index = integer(call, "index", minimum=0)
    lookup.check(query)
    if index is not None:
        with context.long_reads.hold(call.client):
            WATCHERS.inc()
            try:
                await call.until_gone(lookup.wait(query, index, wait))
            finally:
                WATCHERS.dec()
    key = (query, encoding.name)
    cache = context.cache
    answer = cache.answers.get(key)
    if answer is None:
        found = await lookup.find(query)
        answer = Answer(query.topic, found.index, encoding.encode(found), encoding.headers(found.index), call.route)
        cache.answers.put(key, answer)
    if index is None:
        raw = (call.path, call.query_string)
        cache.alias((*raw, call.caller.key) if context.acl.enabled else raw, key)
    return Reply(answer.body, headers=answer.headers)  # the headers the cached answer already holds
