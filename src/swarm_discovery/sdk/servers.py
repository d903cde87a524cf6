"""Several servers behind one client (`SWARM_ADDR=a:8500,b:8500`): one in use, the next when it stops answering.

Servers on one etcd cluster serve the same registry, so a client may ask any of them. It keeps to
the one in use while it answers; a request that finds it unreachable (no connection, or no answer
within the timeout) is sent to the next, in the order given, and that one is used from then on.
A request that reached a server and may have changed something there is not sent again: a POST
(reports) moves on only when its connection was refused, never after it may have been sent.
Followers (watch, events, balancers) resume on the next server from their last index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx

from ..errors import Unreachable

DEFAULT_ADDR = "http://127.0.0.1:8500"
_RESENT = {"GET", "HEAD", "PUT", "DELETE"}  # idempotent: the same request again changes nothing more


def parse_addresses(addr: str | None) -> list[str]:
    """`a:8500,b:8500` (or SWARM_ADDR) -> base URLs; http:// unless one says otherwise."""
    given = addr or os.environ.get("SWARM_ADDR") or DEFAULT_ADDR
    # A URL copied from a browser ends in "/", which every path would then follow.
    urls = [url for url in (part.strip().rstrip("/") for part in given.split(",")) if url]
    return [url if "://" in url else f"http://{url}" for url in urls] or [DEFAULT_ADDR]


class Servers:
    def __init__(self, addr: str | None = None) -> None:
        self.urls = parse_addresses(addr)
        self._at = 0

    @property
    def current(self) -> str:
        return self.urls[self._at % len(self.urls)]

    def named(self) -> str:
        return self.current if len(self.urls) == 1 else f"{self.current} (nor at {', '.join(self.urls)})"

    def attempts(self, request: httpx.Request) -> Iterator[httpx.Request]:
        """`request` again for each other server in turn, from the one in use."""
        base, count = self.current, len(self.urls)
        start = self.urls.index(base)
        return (_rebased(request, base, self.urls[(start + step) % count]) for step in range(1, count))

    def next_after(
        self, attempts: Iterator[httpx.Request], request: httpx.Request, error: httpx.TransportError
    ) -> httpx.Request:
        """The next server's `request` after `request` found its server unreachable; `error` is
        raised when none is left or the request may not be sent again."""
        if request.method not in _RESENT and not isinstance(error, httpx.ConnectError):
            raise error
        following = next(attempts, None)
        if following is None:
            raise error
        url = str(following.url)
        self._at = next(i for i, base in enumerate(self.urls) if url.startswith(base))  # in use from now on
        return following

    def lost(self, error: Exception) -> None:
        """A stream was cut, or could not be opened, for want of the server: the next one from now on."""
        if isinstance(error, (Unreachable, httpx.TransportError)):
            self._at += 1


def _rebased(request: httpx.Request, old: str, new: str) -> httpx.Request:
    return httpx.Request(
        request.method,
        new + str(request.url)[len(old) :],
        headers=request.headers,
        content=request.content,
        extensions=request.extensions,
    )
