"""Turning request bodies, path and query parameters into typed values, or a 4xx naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from ...decoding import Decoder
from ...durations import parse_duration
from ...errors import BadRequest, UnsupportedMediaType
from ...records import ID_PATTERN, PATTERNS, checked_name
from .call import Call

MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
T = TypeVar("T")

_decoders: dict[type, Decoder[Any]] = {}
_ID = re.compile(ID_PATTERN)
_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")
_PATTERN = re.compile(r"^Expected `str` matching regex '(.*)'$")
_MEANINGS = {repr(pattern)[1:-1]: meaning for pattern, meaning in PATTERNS.items()}  # msgspec quotes the repr
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `(.*)`$")


# What a JSON body may say it is besides JSON: nothing, or curl's default for `-d` (which sends
# JSON as often as not).
_LENIENT = ("", "application/x-www-form-urlencoded")
MAX_DIGITS = 18  # any index or limit fits in a 64-bit integer


async def json_body(call: Call, kind: type[T], *, empty: T | None = None, json_only: bool = False) -> T:
    """The request body as `kind`; 415 when it says it is not JSON, 400 naming the field when it is wrong.

    `json_only` takes nothing but a declared JSON type: a web page can make a browser POST a
    form, text/plain or an untyped body anywhere without a CORS preflight, but not JSON.
    """
    declared = call.header("content-type")
    if declared != "application/json":  # what nearly every client sends: nothing to parse
        media = declared.split(";", 1)[0].strip().lower() if declared is not None else ""
        json = media == "application/json" or media.endswith("+json")
        if not json and (json_only or media not in _LENIENT):
            got = repr(declared) if declared is not None else "none"
            raise UnsupportedMediaType(f"Content-Type: expected application/json, got {got}")
    return decode(await call.body(), kind, empty=empty)


def decode(body: bytes, kind: type[T], *, empty: T | None = None) -> T:
    if not body.strip():
        if empty is not None:
            return empty
        raise BadRequest("body: a JSON object is required")
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = Decoder(kind)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise BadRequest(_name_the_field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body: invalid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise BadRequest("body: not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("body: nested too deeply") from None


def _name_the_field(message: str) -> str:
    """Rewrite msgspec's "Expected `int` - at `$.location.lat`" as "location.lat: Expected `int`"."""
    match = _AT.match(message)
    message, path = (match.group(1), match.group(2)) if match else (message, "")
    pattern = _PATTERN.match(message)
    if pattern and pattern.group(1) in _MEANINGS:
        message = _MEANINGS[pattern.group(1)]
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group(2)}" if path else field.group(2)
        message = f"{field.group(1)} field"
    return f"{path or 'body'}: {message}"


def name(call: Call, param: str) -> str:
    """A path parameter that names a service, instance or node."""
    value = call.params[param]
    return value if _ID.fullmatch(value) else checked_name(value, param)  # a call fewer when it is good


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
    # isdigit() alone takes "²" and fullwidth digits, and int() refuses 5,000 of them with a ValueError.
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS) or int(value) < minimum:
        raise BadRequest(
            f"{param}: expected an integer >= {minimum} of at most {MAX_DIGITS} digits, got {value[:40]!r}"
        )
    return int(value)


def wait_seconds(call: Call) -> float:
    value = call.query_params.get("wait")
    if value is None:
        return DEFAULT_WAIT
    return min(parse_duration(value, "wait"), MAX_WAIT)
