"""What readers see of an instance: one immutable version, with its encodings made once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from ..records import HEALTHY, InstanceSpec, InstanceView
from ..selector import Bindings, Selector

_encode = msgspec.json.Encoder().encode


def plain(view: msgspec.Struct) -> dict[str, Any]:
    """What selectors see: every top-level field, so `instance.tags` exists when empty.

    Shallow: the record's own dicts, lists and strings are shared, not copied (they are never
    changed); only Structs, and lists or tuples of them, become dicts and lists, as CEL reads them.
    No field is renamed in the records, so attribute names are the names selectors use.
    """
    fields = msgspec.structs.asdict(view)
    for name, value in fields.items():
        if isinstance(value, msgspec.Struct):
            fields[name] = msgspec.to_builtins(value)
        elif type(value) is tuple or (type(value) is list and value and isinstance(value[0], msgspec.Struct)):
            fields[name] = list(msgspec.to_builtins(value))  # CEL reads lists, not tuples
    return fields


_BLANK = InstanceView(address="", port=1, status="passing", index=0, registered_at=0, updated_at=0)


def view_of(spec: InstanceSpec) -> InstanceView:
    """A view with `spec`'s fields; the server's fields are a blank's until replaced.

    Field by field, on a copy: a Struct made from keyword arguments (listed, from a dict, or by
    `replace`) builds a dict of them on the way, which for all of a view's fields costs twice as
    much, on every registration. tests/test_write_path.py checks that every field is copied.
    """
    view: InstanceView = _BLANK.__copy__()  # type: ignore[attr-defined]  # msgspec's, which the stubs omit
    view.service, view.id, view.node, view.address = spec.service, spec.id, spec.node, spec.address
    view.port, view.protocol, view.version, view.tags = spec.port, spec.protocol, spec.version, spec.tags
    view.meta, view.location, view.capabilities = spec.meta, spec.location, spec.capabilities
    view.capacity, view.weight, view.checks, view.metrics = spec.capacity, spec.weight, spec.checks, spec.metrics
    return view


MEMO_SELECTORS = 8
ENCODED_BYTES = 8 * 1024 * 1024


class Encodings:
    """The JSON of published versions, kept up to `max_bytes` in all, not one per instance for good.

    An encoding is what a listing is joined from and what every watch stream sends, so the ones in
    use stay (second chance: a version read since it was last passed over goes round again) and
    the rest are made again when next asked for. A version that is replaced leaves at once.
    """

    def __init__(self, max_bytes: int = ENCODED_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[int, Published] = OrderedDict()  # by id(): Structs are not hashable

    def keep(self, published: Published, encoded: bytes) -> None:
        published._json = encoded
        self._kept[id(published)] = published
        self.bytes += len(encoded)
        while self.bytes > self.max_bytes:
            _, oldest = self._kept.popitem(last=False)
            if oldest._used:
                oldest._used = False
                self._kept[id(oldest)] = oldest
            else:
                self._drop(oldest)

    def forget(self, published: Published) -> None:
        if self._kept.pop(id(published), None) is not None:
            self._drop(published)

    def _drop(self, published: Published) -> None:
        self.bytes -= len(published._json or b"")
        published._json = None
        published._used = False

    def __len__(self) -> int:
        return len(self._kept)


ENCODINGS = Encodings()


class Published(msgspec.Struct, gc=False):
    """One immutable version of an instance as readers see it.

    Its encoding (while `ENCODINGS` keeps it), selector bindings and results are made on first use
    and kept: the next version is a new object, so nothing here goes stale, and a query repeated
    after an unrelated change evaluates its selector only on the instances that changed. Like the
    records, it holds no reference cycle, so the garbage collector need not track it (there is one
    per instance).
    """

    view: InstanceView
    node: dict[str, Any]
    healthy: bool
    _json: bytes | None = None
    _used: bool = False
    _bindings: Bindings | None = None
    _matches: dict[str, bool] | None = None  # made by the first selector: most versions never see one

    @classmethod
    def of(cls, view: InstanceView, node: dict[str, Any]) -> Published:
        return cls(view, node, view.status in HEALTHY and view.ejected is None)

    @property
    def json(self) -> bytes:
        encoded = self._json
        if encoded is None:
            encoded = _encode(self.view)
            ENCODINGS.keep(self, encoded)
        else:
            self._used = True
        return encoded

    @property
    def reply(self) -> bytes:
        """Its encoding for the reply to the write that made it, kept only if a reader kept it.

        A reply alone is no reason to keep one: past 25,000 instances the budget is full, and
        every write would push out an encoding that a reader may want, for one no one may read.
        """
        return self._json if self._json is not None else _encode(self.view)

    @property
    def bindings(self) -> Bindings:
        if self._bindings is None:
            self._bindings = Bindings(plain(self.view), self.node)
        return self._bindings

    def matches(self, selector: Selector) -> bool:
        memo = self._matches
        if memo is None:
            memo = self._matches = {}
        found = memo.get(selector.source)
        if found is None:
            found = selector.matches(self.bindings)
            if len(memo) >= MEMO_SELECTORS:  # start over: cheaper than finding the oldest, on 10,000 records
                memo.clear()
            memo[selector.source] = found
        return found


def admitted(
    state: Published, *, tags: Sequence[str] = (), selector: Selector | None = None, include_all: bool = False
) -> bool:
    """Whether a listing shows this version: healthy (unless all), with every tag, matching the selector."""
    if not include_all and not state.healthy:
        return False
    if tags and not all(tag in state.view.tags for tag in tags):
        return False
    return selector is None or state.matches(selector)
