"""The change stream: Server-Sent Events for one service.

A stream opens with a `snapshot` event (every matching instance), then sends `put` and `delete`
events as they happen, each with `id:` = its change index. Reconnecting with `Last-Event-ID`
replays what was missed from the registry's history, or sends a fresh snapshot when the history
no longer reaches back that far. An instance that stops matching (it failed its checks, or no
longer fits the selector) is sent as a `delete` to the streams that had it.

Events go out in parts of at most about BATCH_BYTES, each only once the client has room for it
(`rsgi.py`): a stream that falls behind stays behind in the registry's bounded history, not in
frames queued for it, and past the history's reach it gets one fresh snapshot instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

import msgspec

from ...core.lookup import Lookup, Query
from ...core.published import Published, admitted
from ...core.registry import service_topic
from ...errors import BadRequest
from ...records import Left, LeftReason
from ...selector import compile_selector
from ...telemetry import WATCHERS
from .call import Call, Stream
from .inputs import MAX_DIGITS, flag, name
from .reads import json_array

KEEPALIVE_SECONDS = 15.0
BATCH_BYTES = 64 * 1024
_encode = msgspec.json.Encoder().encode


def _frame(event: str, index: int | None, data: bytes) -> bytes:
    if index is None:
        return b"event: %s\ndata: %s\n\n" % (event.encode(), data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (index, event.encode(), data)


class _Stream:
    def __init__(self, lookup: Lookup, query: Query) -> None:
        self.lookup = lookup
        self.registry = lookup.registry
        self.query = query
        self.service = query.service
        self.selector = compile_selector(query.selector) if query.selector is not None else None
        self.visible: set[str] = set()
        self.cursor = 0  # the change index the client has been sent everything up to
        self.lost = False  # the history no longer reaches back to the cursor: a snapshot is due

    def wanted(self, state: Published) -> bool:
        return admitted(state, selector=self.selector, include_all=self.query.include_all)

    async def snapshot(self) -> bytes:
        self.cursor = self.registry.index
        found = cast(list[Published], (await self.lookup.find(self.query)).items)  # an "instances" query
        self.visible = {state.view.id or "" for state in found}
        return _frame("snapshot", self.cursor, json_array([state.json for state in found]))

    def catch_up(self, cursor: int) -> Iterator[bytes]:
        """Frames for what happened after `cursor`, in order; `self.cursor` follows what was made."""
        events = self.registry.history_since(cursor)
        if events is None:
            self.lost = True
            return
        # Changes made at one index (a node's change republishes all its instances) carry the
        # index only on their last frame: a client cut off inside the group resumes before it
        # and gets all of it again, rather than resuming after it with part of it missing.
        group: list[tuple[str, bytes]] = []
        for event in events:
            if group and event.index != self.cursor:
                yield from _grouped(group, self.cursor)
                group = []
            self.cursor = event.index
            if event.service != self.service:
                continue
            if event.state is not None and self.wanted(event.state):
                self.visible.add(event.id)
                group.append(("put", event.state.json))
            elif event.id in self.visible:
                self.visible.discard(event.id)
                group.append(("delete", _encode(Left(service=self.service, id=event.id, reason=_why(event.state)))))
        yield from _grouped(group, self.cursor)

    def parts(self) -> Iterator[bytes]:
        """What happened since `self.cursor`, framed, in parts of about BATCH_BYTES."""
        batch: list[bytes] = []
        size = 0
        for frame in self.catch_up(self.cursor):
            batch.append(frame)
            size += len(frame)
            if size >= BATCH_BYTES:
                yield b"".join(batch)
                batch, size = [], 0
        if batch:
            yield b"".join(batch)

    async def run(self, resume_from: int | None) -> AsyncIterator[bytes]:
        topic = service_topic(self.service)
        WATCHERS.inc()
        try:
            missed = None if resume_from is None else self.registry.history_since(resume_from)
            if missed is None:
                yield await self.snapshot()
            else:
                # The client may hold anything that exists now or changed since: deletes must reach it.
                everything = self.registry.published(self.service)
                self.visible = {s.view.id or "" for s in everything} | {e.id for e in missed}
                self.cursor = resume_from or 0
            while True:
                seen = self.registry.topic_index(topic)
                for part in self.parts():
                    yield part
                if self.lost:
                    self.lost = False
                    yield await self.snapshot()
                await self.registry.wait(topic, seen, KEEPALIVE_SECONDS)
                if self.registry.changes.closed:
                    return  # the server is stopping: the client resumes elsewhere or later
                if self.registry.topic_index(topic) == seen:
                    yield b": keepalive\n\n"
        finally:
            WATCHERS.dec()


def _why(state: Published | None) -> LeftReason:
    """Why an instance left a stream's view."""
    if state is None:
        return "deregistered"
    view = state.view
    if view.status in ("critical", "maintenance"):
        return view.status
    return "ejected" if view.ejected is not None else "unmatched"


def _grouped(group: list[tuple[str, bytes]], index: int) -> Iterator[bytes]:
    for position, (event, data) in enumerate(group, 1):
        yield _frame(event, index if position == len(group) else None, data)


async def watch(call: Call) -> Stream:
    registry = call.context.registry
    service = call.query_params.get("service")
    if not service:
        raise BadRequest("service: the service to watch is required")
    call.params["service"] = service
    query = Query(
        "instances",
        service=name(call, "service"),
        selector=call.query_params.get("selector") or None,
        include_all=flag(call, "all"),
    )
    call.context.lookup.check(query)
    last = call.header("last-event-id") or call.query_params.get("index")
    if last is not None and not (last.isascii() and last.isdigit() and len(last) <= MAX_DIGITS):
        raise BadRequest(f"Last-Event-ID: expected a change index, got {last!r}")
    stream = _Stream(call.context.lookup, query)
    slot = call.context.long_reads.hold(call.client)
    headers = [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("x-swarm-index", str(registry.index)),
        ("x-accel-buffering", "no"),
    ]
    return Stream(stream.run(int(last) if last is not None else None), headers, slot)
