"""Caps on instances: per service, and per registrant (whoever registered them).

A registration that would add an instance past either cap is refused with a 429 that names the
cap and its flag, as a quota is (etcd's "database space exceeded" is gRPC's RESOURCE_EXHAUSTED,
which is HTTP's 429); nothing is written. Replacing an instance adds nothing, unless it moves the
instance to another registrant. Counts are of applied instances, rebuilt from the store at
start, plus the registrations in flight that would add one (`Claim`), so that writes racing
each other cannot all pass below a cap together.
"""

from __future__ import annotations

import msgspec

from ..errors import TooBusy

QUOTA_RETRY_AFTER = 60  # a cap frees only as instances leave: no point in asking again at once


class Quotas(msgspec.Struct, frozen=True):
    per_service: int = 100_000
    per_registrant: int = 100_000


class Claim:
    """What one registration in flight counts against the caps, until it is applied or gives up."""

    __slots__ = ("registrant", "service")

    def __init__(self) -> None:
        self.service: str | None = None
        self.registrant: str | None = None


class Census:
    """Instances per registrant as applied, and the claims of registrations in flight."""

    def __init__(self, quotas: Quotas | None = None) -> None:
        self.quotas = quotas or Quotas()
        self.per_registrant: dict[str, int] = {}
        # registrations in flight that add an instance, per service and per registrant
        self._services: dict[str, int] = {}
        self._registrants: dict[str, int] = {}

    def moved(self, before: str | None, after: str | None) -> None:
        """An instance left registrant `before` (None: it is new) for `after` (None: it is gone)."""
        if before == after:
            return
        if before is not None:
            _decrement(self.per_registrant, before)
        if after is not None:
            self.per_registrant[after] = self.per_registrant.get(after, 0) + 1

    def claim(self, claim: Claim, service: str | None, size: int, registrant: str | None) -> None:
        """Count `claim` as adding one to `service` (which has `size` instances) and to `registrant`,
        where not None; `TooBusy` if either is at its cap. Its earlier count is dropped first."""
        if claim.service is not None or claim.registrant is not None:  # a write tried again
            self.release(claim)
        q = self.quotas
        if service is not None:
            service_claims = self._services.get(service, 0)
            if size + service_claims >= q.per_service:
                raise _over(
                    f"service: {service!r} is at its cap of {q.per_service} instances (--max-instances-per-service)"
                )
        if registrant is not None:
            registrant_claims = self._registrants.get(registrant, 0)
            if self.per_registrant.get(registrant, 0) + registrant_claims >= q.per_registrant:
                raise _over(
                    f"registrant: {registrant} is at its cap of {q.per_registrant} instances"
                    " (--max-instances-per-registrant)"
                )
            self._registrants[registrant] = registrant_claims + 1
        if service is not None:
            self._services[service] = service_claims + 1
        claim.service, claim.registrant = service, registrant

    def release(self, claim: Claim) -> None:
        if claim.service is not None:
            _decrement(self._services, claim.service)
        if claim.registrant is not None:
            _decrement(self._registrants, claim.registrant)
        claim.service = claim.registrant = None


def _over(message: str) -> TooBusy:
    busy = TooBusy(message)
    busy.retry_after = QUOTA_RETRY_AFTER
    return busy


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
