"""Turning request bodies, path and query parameters into typed values, or a 4xx naming the field."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from starlette.requests import Request

from ..durations import parse_duration
from ..errors import BadRequest, PayloadTooLarge
from ..records import ID_PATTERN

MAX_BODY = 64 * 1024
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder] = {}  # type: ignore[type-arg]
_ID = re.compile(ID_PATTERN)
_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `(.*)`$")


async def read_body(request: Request) -> bytes:
    for header, value in request.scope["headers"]:  # ASGI names are lower case; Headers() costs more
        if header == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            raise PayloadTooLarge(f"body: larger than the {MAX_BODY // 1024} KiB limit")
    chunks, size = [], 0
    while True:  # straight from ASGI receive: Request.stream() costs more than the rest of a write
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("body: the client went away before sending it")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"body: larger than the {MAX_BODY // 1024} KiB limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def decode(body: bytes, kind: type[T], *, empty: T | None = None) -> T:
    if not body.strip():
        if empty is not None:
            return empty
        raise BadRequest("body: a JSON object is required")
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise BadRequest(_name_the_field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body: invalid JSON ({exc})") from None


def _name_the_field(message: str) -> str:
    """Rewrite msgspec's "Expected `int` - at `$.location.lat`" as "location.lat: Expected `int`"."""
    match = _AT.match(message)
    message, path = (match.group(1), match.group(2)) if match else (message, "")
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group(2)}" if path else field.group(2)
        message = f"{field.group(1)} field"
    return f"{path or 'body'}: {message}"


def name(request: Request, param: str) -> str:
    value: str = request.path_params[param]
    if not _ID.match(value):
        raise BadRequest(f"{param}: {value!r} must match {ID_PATTERN}")
    return value


def flag(request: Request, param: str) -> bool:
    value = request.query_params.get(param)
    if value is None:
        return False
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest(f"{param}: expected true or false, got {value!r}")


def integer(request: Request, param: str, *, minimum: int) -> int | None:
    value = request.query_params.get(param)
    if value is None:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise BadRequest(f"{param}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def wait_seconds(request: Request) -> float:
    value = request.query_params.get("wait")
    if value is None:
        return DEFAULT_WAIT
    return min(parse_duration(value, "wait"), MAX_WAIT)
