"""Reading the server's answers: decoders built once, error answers raised as `ApiError`.

Anything that is not what a swarm server answers (an HTML page from a web server or a proxy on
that port, JSON of another shape) is `NotSwarm`, which names the address and what it answered,
so that a wrong SWARM_ADDR reads as one line instead of a page of HTML or a decoding error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
import msgspec

from ..errors import ApiError
from ..records import ErrorBody

T = TypeVar("T")
Read = Callable[[httpx.Response], T]
_error_body = msgspec.json.Decoder(ErrorBody)


class NotSwarm(ApiError):
    """The address answered, but not as a swarm server does."""


def not_swarm(response: httpx.Response, gateway: bool = False) -> NotSwarm:
    url = response.request.url
    kind = response.headers.get("content-type", "no content type").partition(";")[0]
    what = "is a swarm gateway, not the registry" if gateway else "does not look like a swarm server"
    return NotSwarm(
        response.status_code,
        f"{url.scheme}://{url.netloc.decode()} {what} "
        f"(it answered {response.status_code} {kind} to {response.request.method} {url.path})",
    )


def raise_for_error(response: httpx.Response) -> None:
    """`ApiError` with the server's message for an error answer; `NotSwarm` if it has none, or
    if a swarm gateway answered in the registry's place."""
    if response.status_code >= 400:
        if "x-swarm-gateway" in response.headers:
            raise not_swarm(response, gateway=True)
        try:
            message = _error_body.decode(response.content).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise not_swarm(response) from None
        raise ApiError(response.status_code, message)


def reader(kind: type[T]) -> Read[T]:
    """How to read an answer of `kind`, its decoder built once."""
    decoder = msgspec.json.Decoder(kind)

    def read(response: httpx.Response) -> T:
        raise_for_error(response)
        try:
            return decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise not_swarm(response) from None

    return read
