"""Equal parts of many records, held once.

The instances of one service mostly carry the same tags, meta, location, capabilities and
checks, and every decoded record would hold a copy of its own (an empty dict is 64 bytes, a small
one 200 before its contents). `Shared.spec` swaps a spec's parts for equal ones already held, so
100,000 instances in ten services hold a few hundred of each instead of 100,000. Parts are never
changed after decoding (a record is replaced, never edited), which is what makes sharing safe.

Two parts are equal when their JSON encodings are: that tells 1 from 1.0 and from true, and keeps
key order, so a shared part encodes exactly as the original would. It is also all the store keeps
of a record, so nothing that survives a restart can tell them apart. Parts made of strings alone
(tags, meta), and a location (strings and floats), are told apart as tuples of their values,
which is the same test for less than an encoding, and an empty part is the pool's one empty
value: most records have several, and every registration passes through here. Capabilities a
pool holds were validated when they came first: a registration with the same ones is not again.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any, TypeVar

import msgspec
from msgspec.structs import astuple

from ..records import InstanceSpec, validate_capabilities

T = TypeVar("T")
SWEEP_FLOOR = 1024
SWEEP_CHECK = 256  # records shared between looks at whether a pool has doubled
_encode = msgspec.json.Encoder().encode


def _refcounts(held: dict[Hashable, Any]) -> list[int]:
    return [sys.getrefcount(value) for value in held.values()]


_ALONE = _refcounts({b"": object()})[0]  # what a value that only the pool holds shows, on this Python


class Pool(dict[Hashable, Any]):
    """One held value per key (by default, the value's JSON encoding): `setdefault` shares one.

    What no record holds any more is dropped once the pool has doubled since its last sweep, so
    it stays within about twice what live records use.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sweep_at = SWEEP_FLOOR

    def share(self, value: T, key: Hashable = None) -> T:
        return self.setdefault(_encode(value) if key is None else key, value)  # type: ignore[no-any-return]

    def sweep_if_grown(self) -> None:
        if len(self) >= self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        kept = [
            (key, value) for (key, value), count in zip(self.items(), _refcounts(self), strict=True) if count > _ALONE
        ]
        self.clear()
        self.update(kept)
        self._sweep_at = max(SWEEP_FLOOR, 2 * len(self))


class Shared:
    """The pools of one registry, one per part of a spec (a meta dict is never a location)."""

    def __init__(self) -> None:
        self.tags = Pool()
        self.meta = Pool()
        self.location = Pool()
        self.capabilities = Pool()
        self.capacity = Pool()
        self.checks = Pool()
        self._until_check = SWEEP_CHECK
        # Empty parts are the commonest: one of each kind, which needs no lookup.
        self._no_items: list[Any] = []
        self._no_fields: dict[str, Any] = {}

    def spec(self, spec: InstanceSpec, validate: bool = False) -> None:
        """Swap `spec`'s parts for the equal ones already held; in place, as nothing else holds it yet.

        With `validate`, capabilities not held yet are checked first (`BadRequest`): held ones were.
        """
        self._until_check -= 1
        if not self._until_check:
            self._until_check = SWEEP_CHECK
            for pool in (self.tags, self.meta, self.location, self.capabilities, self.capacity, self.checks):
                pool.sweep_if_grown()
        if spec.tags:
            spec.tags = self.tags.setdefault(tuple(spec.tags), spec.tags)
        else:
            spec.tags = self._no_items
        spec.meta = self.meta.setdefault(tuple(spec.meta.items()), spec.meta) if spec.meta else self._no_fields
        if spec.location is not None:
            spec.location = self.location.setdefault(astuple(spec.location), spec.location)
        if spec.capabilities:
            key = _encode(spec.capabilities)
            held = self.capabilities.get(key)
            if held is None:
                if validate:
                    validate_capabilities(spec.capabilities)
                held = self.capabilities[key] = spec.capabilities
            spec.capabilities = held
        else:
            spec.capabilities = self._no_fields
        spec.capacity = (
            self.capacity.setdefault(_encode(spec.capacity), spec.capacity) if spec.capacity else self._no_fields
        )
        spec.checks = self.checks.setdefault(_encode(spec.checks), spec.checks) if spec.checks else self._no_items
        spec.metrics = self.metrics(spec.metrics) if spec.metrics else self._no_fields
        # Names repeat across instances: one string each (sys.intern drops those no one uses). The
        # protocol needs none: msgspec hands back the Literal's own string.
        if spec.service is not None:
            spec.service = sys.intern(spec.service)
        if spec.node is not None:
            spec.node = sys.intern(spec.node)
        if spec.version is not None:
            spec.version = sys.intern(spec.version)

    def metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics with their names interned: the values are each instance's own, the names are not."""
        return {sys.intern(name): value for name, value in metrics.items()}  # a third cheaper than dict(zip(map()))
