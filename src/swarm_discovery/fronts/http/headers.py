"""Response headers, in the two shapes the server interfaces take them."""

from __future__ import annotations

JSON = "application/json"
Headers = list[tuple[str, str]]


def json_headers(index: int) -> Headers:
    """JSON with the change index it is current at."""
    return [("content-type", JSON), ("x-swarm-index", str(index))]


def asgi_headers(headers: Headers, body: bytes | None) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI takes them, with Content-Length when the whole body is known."""
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if body is not None:
        encoded.append((b"content-length", str(len(body)).encode()))
    return encoded
