"""Decoding what users send, with the text patterns checked once per body instead of per string.

Free text (tags, meta, versions, check targets) refuses control characters and bidirectional
overrides. As a msgspec pattern that is a regular-expression search per string: most of what
decoding a registration costs. Yet a JSON body can hold such a character only behind an escape
(a `\\`; a raw control character is not JSON) or as its own bytes: DEL, or a UTF-8 sequence that
starts with 0xE2 (U+2000 to U+2FFF, where the overrides are). A body with none of those cannot
break a text pattern, and is decoded without them. Any other body is decoded first by a twin of
its type with every pattern in place, only for its errors: what is refused, and the message that
names the field, are exactly what they would be if every string were searched.

`text(pattern, ...)` declares such a pattern on a string type. It shows in the JSON schema as a
pattern would; a plain `msgspec` decoder does not check it, so what users send is decoded with
`Decoder`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Generic, TypeVar, Union

import msgspec

T = TypeVar("T")


def text(pattern: str, **constraints: Any) -> msgspec.Meta:
    """String constraints with a `pattern` that refuses nothing but C0 controls, DEL and characters
    from U+2000 to U+2FFF (what a clean body cannot hold), checked by `Decoder`."""
    return msgspec.Meta(**constraints, extra_json_schema={"pattern": pattern})


# `\\`, DEL and 0xE2, as integers: `int in bytes` is one memchr, where `bytes in bytes` first fails
# to read its operand as an integer (an exception made and dropped), and find() parses arguments.
_BACKSLASH, _DEL, _E2 = 0x5C, 0x7F, 0xE2


class Decoder(Generic[T]):
    """Decodes JSON as `kind`, checking `text` patterns on the bodies that could break one."""

    def __init__(self, kind: type[T]) -> None:
        self._decode = msgspec.json.Decoder(kind).decode
        checked = _checked(kind, {})
        self._check = msgspec.json.Decoder(checked).decode if checked is not kind else None

    def decode(self, body: bytes) -> T:
        if self._check is not None and (_BACKSLASH in body or _DEL in body or _E2 in body):
            self._check(body)  # for its errors: what it makes is the same value, of the twin types
        return self._decode(body)


def _checked(kind: Any, made: dict[type, type]) -> Any:
    """`kind` with its `text` patterns as msgspec patterns; `kind` itself if it has none."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        if kind not in made:
            made[kind] = _checked_struct(kind, made)
        return made[kind]
    if origin is Annotated:
        base, *metadata = args
        patterns = [msgspec.Meta(pattern=m.extra_json_schema["pattern"]) for m in metadata if _is_text(m)]
        checked = _checked(base, made)
        return Annotated[(checked, *metadata, *patterns)] if patterns or checked is not base else kind
    if origin is None or origin is typing.Literal:
        return kind
    checked_args = tuple(_checked(arg, made) for arg in args)
    if all(new is old for new, old in zip(checked_args, args, strict=True)):
        return kind
    if origin is Union or origin is types.UnionType:
        return Union[checked_args]  # noqa: UP007 (a union made of a tuple of types)
    return origin[checked_args]


def _is_text(meta: object) -> bool:
    return isinstance(meta, msgspec.Meta) and meta.pattern is None and "pattern" in (meta.extra_json_schema or {})


def _checked_struct(kind: type[msgspec.Struct], made: dict[type, type]) -> type:
    fields = msgspec.structs.fields(kind)
    checked = [_checked(f.type, made) for f in fields]
    if all(new is f.type for new, f in zip(checked, fields, strict=True)):
        return kind
    config = kind.__struct_config__
    if config.tag is not None or config.array_like or any(f.encode_name != f.name for f in fields):
        raise TypeError(f"{kind.__name__}: a checked twin copies neither tags, arrays nor renamed fields")
    specs: list[Any] = []
    for f, type_ in zip(fields, checked, strict=True):
        if f.default is not msgspec.NODEFAULT:
            specs.append((f.name, type_, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            specs.append((f.name, type_, msgspec.field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, type_))
    return msgspec.defstruct(
        kind.__name__,
        specs,
        kw_only=True,  # the order of fields with and without defaults is the original's; only names matter
        forbid_unknown_fields=config.forbid_unknown_fields,
        omit_defaults=config.omit_defaults,
        module=kind.__module__,
    )
