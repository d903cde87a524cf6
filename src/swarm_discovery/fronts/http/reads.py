"""Reads: blocking queries, the X-Swarm-Index header, and the cache of encoded answers.

Reads never touch the store. A blocking query's answer is cached under its query less `index`
and `wait`, so that many watchers woken by one change share one encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from ...telemetry import WATCHERS
from .cache import Answer, ResponseCache
from .call import Call, Reply
from .inputs import integer, wait_seconds


async def read(call: Call, topic: str, render: Callable[[], bytes]) -> Reply:
    """Answer a read of `topic`, blocking first when the query carries `index`."""
    registry = call.context.registry
    cache: ResponseCache = call.context.cache
    wait = wait_seconds(call)
    index = integer(call, "index", minimum=0)
    if index is not None:
        WATCHERS.inc()
        try:
            await call.until_gone(registry.wait(topic, index, wait))
        finally:
            WATCHERS.dec()
        query = urlencode([kv for kv in call.query_params.multi_items() if kv[0] not in ("index", "wait")])
    else:
        query = call.query_string
    key = (call.path, query)
    answer = cache.get(key)
    if answer is None:
        answer = Answer(topic, registry.topic_index(topic), render(), call.route)
        cache.put(key, answer)
    return Reply(answer.body, headers=answer.headers)  # the headers the cached answer already holds


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
