"""Turning request bodies, path and query parameters into typed values, or a 4xx naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from ...durations import parse_duration
from ...errors import BadRequest
from ...records import ID_PATTERN
from .call import Call

MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_ID = re.compile(ID_PATTERN)
_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `(.*)`$")


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


def name(call: Call, param: str) -> str:
    value: str = call.params[param]
    if not _ID.match(value):
        raise BadRequest(f"{param}: {value!r} must match {ID_PATTERN}")
    return value


def flag(call: Call, param: str) -> bool:
    value = call.query_params.get(param)
    if value is None:
        return False
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest(f"{param}: expected true or false, got {value!r}")


def integer(call: Call, param: str, *, minimum: int) -> int | None:
    value = call.query_params.get(param)
    if value is None:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise BadRequest(f"{param}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def wait_seconds(call: Call) -> float:
    value = call.query_params.get("wait")
    if value is None:
        return DEFAULT_WAIT
    return min(parse_duration(value, "wait"), MAX_WAIT)
