"""Following the server across restarts: what `watch()` and `events()` of both faces share.

A follower that has been answered once keeps going when the server goes away (a restart, a
network cut, a 5xx or 429 while it is busy): it waits with a backoff (1 s doubling to 30 s),
asks again from the last index it saw, and logs once when it lost the server and once when it
is back. Before the first answer nothing is retried: a wrong address or a bad selector is the
caller's to hear at once. Errors the server means (400, 403, 404) are never retried.
"""

from __future__ import annotations

import logging

import httpx
import msgspec

from ..errors import ApiError, Unreachable

log = logging.getLogger("swarm.sdk")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


class WatchEvent(msgspec.Struct, frozen=True):
    event: str  # snapshot, put or delete
    index: int
    data: str  # JSON: a list of instances (snapshot), an instance (put) or {service, id} (delete)


def transient(error: Exception) -> bool:
    """Whether asking again later may succeed."""
    if isinstance(error, ApiError):
        return isinstance(error, Unreachable) or error.status_code == 429 or error.status_code >= 500
    return isinstance(error, httpx.TransportError)  # a stream cut while it was read


class Follower:
    """One follower's state: the last index it saw, whether it has lost the server, the next backoff."""

    def __init__(self, what: str, base_url: str) -> None:
        self.what = what
        self.base_url = base_url
        self.index: int | None = None  # None until the first answer
        self._lost: str | None = None  # why, while the server is lost
        self._failures = 0
        self._from = base_url  # where the stream's index comes from

    def answered(self, url: str | None = None) -> None:
        """The server answered (at `url`, for a change stream): say so if it had been lost."""
        if url is not None:
            self._from = url
        if self._lost is not None:
            log.warning("%s: %s answers again; resuming from index %s", self.what, self.base_url, self.index)
        self._lost, self._failures = None, 0

    def since(self, base_url: str) -> int | None:
        """The index a change stream resumes from at `base_url`: none on another server than the
        one it came from, whose indexes may differ (a fresh snapshot, rather than a gap)."""
        return self.index if self._from.startswith(base_url) else None

    def lost(self, error: Exception) -> float:
        """Asking failed: `error` raised again if it is not worth retrying, else the seconds to wait."""
        if self.index is None or not transient(error):
            raise error
        delay = min(BACKOFF_FIRST * 2.0**self._failures, BACKOFF_MAX)
        self._failures += 1
        if self._lost is None:
            self._lost = str(error) or type(error).__name__
            log.warning("%s: lost the server (%s); retrying, every %g s at first", self.what, self._lost, delay)
        return delay


class EventParser:
    """Server-Sent Events, line by line: `feed` returns an event once its blank line arrives."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> WatchEvent | None:
        if line:
            key, _, value = line.partition(":")
            self._fields[key] = value.removeprefix(" ")
            return None
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return None
        return WatchEvent(fields.get("event", "message"), int(fields.get("id", 0)), fields["data"])
