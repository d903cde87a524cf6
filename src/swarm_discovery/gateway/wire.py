"""HTTP/1.1 as the gateway speaks it to instances: request heads out, response heads and bodies in.

What an instance answers is parsed strictly (RFC 9112): a status line, header fields without
line folding, a Content-Length that is one number, Transfer-Encoding chunked as the last coding
(then any Content-Length is ignored), or else a body that ends when the connection does. A head
past MAX_HEAD bytes or MAX_FIELDS fields, or anything malformed, is a `BadResponse`: the gateway
answers 502 for it and never reuses the connection.

Hop-by-hop fields (those of this connection, not of the message) are dropped both ways, and so are
any the Connection field names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from ..errors import SwarmError

MAX_HEAD = 64 * 1024
MAX_FIELDS = 128
MAX_CHUNK_LINE = 1024
CACHED_HEAD = 2048
CACHED_HEADS = 256
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # the gateway frames each message itself
        b"host",
        b"expect",  # the gateway has the body already or streams it: no 100-continue upstream
    }
)
# Of a response: the same, but for what the client needs to see.
_RESPONSE_KEPT = frozenset({"proxy-authenticate", "host", "expect"})
_RESPONSE_SPECIAL = frozenset(name.decode() for name in HOP_BY_HOP)
# Of a request: the same, and the forwarding fields, which the gateway rewrites.
_NOT_COPIED = HOP_BY_HOP | {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"}


K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V) -> None:
    """Keep `value` in one of the caches of what is sent over and over: at most CACHED_HEADS
    entries, all dropped when full (cheaper than tracking which is least used)."""
    if len(cache) >= CACHED_HEADS:
        cache.clear()
    cache[key] = value


_HEADS: dict[bytes, Head] = {}
_BODILESS_HEADS: dict[bytes, Head] = {}
_COPIED: dict[Iterable[tuple[bytes, bytes]], bytes] = {}


class BadResponse(SwarmError):
    """What an instance sent is not a valid HTTP/1.1 response."""


class Head:
    """A response's status line and fields, and how its body is framed."""

    __slots__ = ("chunked", "dated", "fields", "keep_alive", "length", "lines", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        fields: list[tuple[str, str]],
        length: int | None,
        chunked: bool,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.fields = fields  # end-to-end fields only, in order, names as sent
        self.length = length  # None: chunked, or until the connection closes
        self.chunked = chunked
        self.keep_alive = keep_alive
        # As they go on to the client, made once: a head is parsed once and then looked up.
        self.lines = "".join([f"{k}: {v}\r\n" for k, v in fields]).encode("latin-1")
        self.dated = any(k.lower() == "date" for k, _ in fields)

    def get(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.fields if k.lower() == lower), None)


def parse_head(head: bytes, bodiless: bool) -> Head:
    """A response head (without its blank line); `bodiless`: the request was HEAD.

    An instance sends the same head over and over (its Date changes once a second, a stream's
    head not at all), and parsing one costs about fifty times what looking it up does: heads of
    up to CACHED_HEAD bytes are kept, at most CACHED_HEADS of them, all dropped when full. A
    `Head` is therefore shared: nothing changes one once it is made.
    """
    cache = _BODILESS_HEADS if bodiless else _HEADS
    found = cache.get(head)
    if found is not None:
        return found
    parsed = _parse_head(head, bodiless)
    if len(head) <= CACHED_HEAD:
        remember(cache, head, parsed)
    return parsed


def _parse_head(head: bytes, bodiless: bool) -> Head:
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) - 1 > MAX_FIELDS:
        raise BadResponse(f"more than {MAX_FIELDS} header fields")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(code)
    keep_alive = version == "HTTP/1.1"
    fields: list[tuple[str, str]] = []
    lengths: set[str] = set()
    codings: list[str] = []
    named: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name or "\t" in name or "\r" in line or "\n" in line:
            raise BadResponse(f"malformed header field: {line[:80]!r}")
        lower = name.lower()
        if lower not in _RESPONSE_SPECIAL:
            fields.append((name, value.strip(" \t")))
            continue
        value = value.strip(" \t")
        if lower == "content-length":
            lengths.add(value)
            if bodiless:  # what the body would have been: the client should see it
                fields.append((name, value))
        elif lower == "transfer-encoding":
            codings += [c.strip().lower() for c in value.split(",")]
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            keep_alive = "close" not in tokens and (keep_alive or "keep-alive" in tokens)
            named |= tokens - _RESPONSE_SPECIAL
        elif lower in _RESPONSE_KEPT:
            fields.append((name, value))
    if named:  # rare: fields the Connection field names are of this connection only
        fields = [(k, v) for k, v in fields if k.lower() not in named]
    length: int | None = None
    chunked = False
    if bodiless or status < 200 or status in (204, 304):
        length = 0
    elif codings:
        chunked = codings[-1] == "chunked"
        if not chunked:
            keep_alive = False  # the body ends when the connection does
    elif lengths:
        (declared,) = lengths if len(lengths) == 1 else ("",)
        if not declared.isdigit() or len(declared) > 18:
            raise BadResponse(f"invalid Content-Length: {', '.join(sorted(lengths))[:80]!r}")
        length = int(declared)
    else:
        keep_alive = False
    return Head(status, reason, fields, length, chunked, keep_alive)


class Chunked:
    """Undoes chunked transfer coding incrementally: `feed` takes what arrived, returns the data in it."""

    __slots__ = ("_left", "_state", "done")

    def __init__(self) -> None:
        self._left = 0
        self._state = "size"  # size, data, crlf, trailer
        self.done = False

    def feed(self, buffer: bytearray) -> bytes:
        """Consume what it can of `buffer` (in place); the payload bytes found."""
        out: list[bytes | bytearray] = []
        while buffer and not self.done:
            if self._state == "data":
                take = buffer[: self._left]
                del buffer[: len(take)]
                self._left -= len(take)
                out.append(take)
                if self._left == 0:
                    self._state = "crlf"
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_CHUNK_LINE:
                    raise BadResponse("chunk size line too long")
                break
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._state == "crlf":
                if line:
                    raise BadResponse("chunk data longer than its size")
                self._state = "size"
            elif self._state == "size":
                size = line.split(b";", 1)[0].strip()
                if not size or len(size) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size):
                    raise BadResponse(f"invalid chunk size: {line[:40]!r}")
                self._left = int(size, 16)
                self._state = "data" if self._left else "trailer"
            elif not line:  # the blank line after the trailer fields
                self.done = True
        return b"".join(out)


def request_head(
    method: str, target: str, authority: str, fields: Iterable[tuple[bytes, bytes]], extra: list[bytes]
) -> bytes:
    """The head of a request to an instance: the client's end-to-end fields, then `extra` lines."""
    start = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("latin-1")
    return b"".join([start, _copied(fields), *extra, b"\r\n"])


def _copied(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's fields that go on, as lines. A client sends the same fields request after
    request: as `parse_head` does with heads, those of up to CACHED_HEAD bytes given as a tuple
    (the front's fields) are kept, at most CACHED_HEADS, all dropped when full."""
    hashable = isinstance(fields, tuple)
    if hashable:
        found = _COPIED.get(fields)
        if found is not None:
            return found
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    size = 0
    for name, value in fields:
        size += len(name) + len(value)
        lower = name.lower()
        if lower in _NOT_COPIED:
            if lower == b"connection":
                named |= {t.strip().lower() for t in value.split(b",")}
            continue
        kept.append((lower, b"%s: %s\r\n" % (name, value)))
    copied = b"".join([line for lower, line in kept if lower not in named] if named else [line for _, line in kept])
    if hashable and size <= CACHED_HEAD:
        remember(_COPIED, fields, copied)
    return copied
