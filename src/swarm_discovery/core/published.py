"""What readers see of an instance: one immutable version, with its encodings made once."""

from __future__ import annotations

from typing import Any

import msgspec

from ..records import HEALTHY, InstanceView
from ..selector import Bindings, Selector

_encode = msgspec.json.Encoder().encode

_DEFAULTS: dict[type, dict[str, Any]] = {}


def plain(view: msgspec.Struct) -> dict[str, Any]:
    """What selectors see: top-level fields with their defaults, so `instance.tags` exists when empty.

    The encoding leaves defaults out; they are filled in from one shared, read-only dict per type.
    """
    kind = type(view)
    defaults = _DEFAULTS.get(kind)
    if defaults is None:
        defaults = _DEFAULTS[kind] = {
            f.encode_name: msgspec.to_builtins(f.default_factory() if f.default is msgspec.NODEFAULT else f.default)
            for f in msgspec.structs.fields(kind)
            if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
        }
    plain = {**defaults, **msgspec.to_builtins(view)}
    plain["check_states"] = list(plain["check_states"])  # CEL reads lists, not tuples
    return plain


MEMO_SELECTORS = 8


class Published(msgspec.Struct, gc=False):
    """One immutable version of an instance as readers see it.

    Its encodings and selector results are made on first use and kept: the next version is a new
    object, so nothing here goes stale, and a query repeated after an unrelated change evaluates
    its selector only on the instances that changed. Like the records, it holds no reference
    cycle, so the garbage collector need not track it (there is one per instance).
    """

    view: InstanceView
    node: dict[str, Any]
    healthy: bool
    _json: bytes | None = None
    _bindings: Bindings | None = None
    _matches: dict[str, bool] = {}

    @classmethod
    def of(cls, view: InstanceView, node: dict[str, Any]) -> Published:
        return cls(view, node, view.status in HEALTHY and view.ejected is None)

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _encode(self.view)
        return self._json

    @property
    def bindings(self) -> Bindings:
        if self._bindings is None:
            self._bindings = Bindings(plain(self.view), self.node)
        return self._bindings

    def matches(self, selector: Selector) -> bool:
        memo = self._matches
        found = memo.get(selector.source)
        if found is None:
            found = selector.matches(self.bindings)
            if len(memo) >= MEMO_SELECTORS:  # start over: cheaper than finding the oldest, on 10,000 records
                memo.clear()
            memo[selector.source] = found
        return found
