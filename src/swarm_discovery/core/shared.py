"""Equal parts of many records, held once.

The instances of one service mostly carry the same tags, meta, location, capabilities and
checks, and every decoded record would hold a copy of its own (an empty dict is 64 bytes, a small
one 200 before its contents). `Shared.spec` swaps a spec's parts for equal ones already held, so
100,000 instances in ten services hold a few hundred of each instead of 100,000. Parts are never
changed after decoding (a record is replaced, never edited), which is what makes sharing safe.

Two parts are equal when their JSON encodings are: that tells 1 from 1.0 and from true, and keeps
key order, so a shared part encodes exactly as the original would. It is also all the store keeps
of a record, so nothing that survives a restart can tell them apart.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

import msgspec

from ..records import InstanceSpec

T = TypeVar("T")
SWEEP_FLOOR = 1024
_encode = msgspec.json.Encoder().encode


def _refcounts(held: dict[bytes, Any]) -> list[int]:
    return [sys.getrefcount(value) for value in held.values()]


_ALONE = _refcounts({b"": object()})[0]  # what a value that only the pool holds shows, on this Python


class Pool:
    """One held value per encoding; what no record holds any more is dropped once the pool has
    doubled since its last sweep, so it stays within twice what live records use."""

    def __init__(self) -> None:
        self._held: dict[bytes, Any] = {}
        self._sweep_at = SWEEP_FLOOR

    def share(self, value: T) -> T:
        key = _encode(value)
        held = self._held.get(key)
        if held is not None:
            return held  # type: ignore[no-any-return]
        if len(self._held) >= self._sweep_at:
            self._sweep()
        self._held[key] = value
        return value

    def _sweep(self) -> None:
        counts = _refcounts(self._held)
        held = zip(self._held.items(), counts, strict=True)
        self._held = {key: value for (key, value), count in held if count > _ALONE}
        self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._held))

    def __len__(self) -> int:
        return len(self._held)


class Shared:
    """The pools of one registry, one per part of a spec (a meta dict is never a location)."""

    def __init__(self) -> None:
        self.tags = Pool()
        self.meta = Pool()
        self.location = Pool()
        self.capabilities = Pool()
        self.capacity = Pool()
        self.checks = Pool()

    def spec(self, spec: InstanceSpec) -> None:
        """Swap `spec`'s parts for the equal ones already held; in place, as nothing else holds it yet."""
        spec.tags = self.tags.share(spec.tags)
        spec.meta = self.meta.share(spec.meta)
        if spec.location is not None:
            spec.location = self.location.share(spec.location)
        spec.capabilities = self.capabilities.share(spec.capabilities)
        spec.capacity = self.capacity.share(spec.capacity)
        spec.checks = self.checks.share(spec.checks)
        spec.metrics = self.metrics(spec.metrics)
        # Names repeat across instances: one string each (sys.intern drops those no one uses).
        if spec.service is not None:
            spec.service = sys.intern(spec.service)
        if spec.node is not None:
            spec.node = sys.intern(spec.node)
        if spec.version is not None:
            spec.version = sys.intern(spec.version)
        spec.protocol = sys.intern(spec.protocol)  # type: ignore[assignment]

    def metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics with their names interned: the values are each instance's own, the names are not."""
        return {sys.intern(name): value for name, value in metrics.items()}
