"""A local store's leases: which keys each lease holds and when it runs out, no I/O.

As in etcd, a store that restarts gives every lease its full TTL again: the holders had no way
to renew while the store was down.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from .protocol import LeaseNotFound


class _Lease:
    __slots__ = ("keys", "timer", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.keys: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None


class Leases:
    def __init__(self, on_expire: Callable[[int], None]) -> None:
        self._on_expire = on_expire
        self._leases: dict[int, _Lease] = {}

    def add(self, lease: int, ttl: float) -> None:
        self._leases[lease] = _Lease(ttl)

    def new_id(self) -> int:
        # Random, as etcd's are in effect: an id handed out before a restart and revoked since
        # must not come back to someone else, whom its old holder would then renew.
        while True:
            lease = secrets.randbits(62) + 1
            if lease not in self._leases:
                return lease

    def exists(self, lease: int) -> bool:
        return lease in self._leases

    def ttl(self, lease: int) -> float:
        found = self._leases.get(lease)
        if found is None:
            raise LeaseNotFound(f"lease {lease} is not granted (it expired or was revoked)")
        return found.ttl

    def keys(self, lease: int) -> set[str]:
        found = self._leases.get(lease)
        return set(found.keys) if found is not None else set()

    def attach(self, key: str, lease: int) -> None:
        self._leases[lease].keys.add(key)

    def detach(self, key: str, lease: int) -> None:
        found = self._leases.get(lease)
        if found is not None:
            found.keys.discard(key)

    def renew(self, lease: int) -> float:
        """Start the lease's TTL again from now."""
        found = self._leases.get(lease)
        if found is None:
            raise LeaseNotFound(f"lease {lease} is not granted (it expired or was revoked)")
        if found.timer is not None:
            found.timer.cancel()
        found.timer = asyncio.get_running_loop().call_later(found.ttl, self._on_expire, lease)
        return found.ttl

    def renew_all(self) -> None:
        for lease in self._leases:
            self.renew(lease)

    def remove(self, lease: int) -> None:
        found = self._leases.pop(lease, None)
        if found is not None and found.timer is not None:
            found.timer.cancel()

    def close(self) -> None:
        for found in self._leases.values():
            if found.timer is not None:
                found.timer.cancel()
