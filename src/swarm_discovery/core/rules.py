"""Service-wide metric rules: one definition that every instance of a service shares.

A fleet of inference servers registers one rule (`instance.metrics.queue_depth > 2.0 *
instance.capacity.max_concurrency`) once, not in each instance's checks. The rules of a service
live in the store (`rules/{service}`) and reach memory the way records do, through the registry's
one apply path, so every server applies them, to the instances there now and to those registered
later: the registry adds them after each instance's own checks (`Registry._rules_changed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from ..errors import BadRequest, NotFound, TooBusy
from ..health.metric import validate_rules
from ..records import CheckSpec, RulesRequest, ServiceRules, validate_checks
from ..store import Commit, Delete, Put

PREFIX = "rules/"
MAX_SERVICES_WITH_RULES = 10_000


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ServiceRules).decode


class RulesBook:
    """Every service's rules, followed from the store; `changed(service)` hears each change."""

    def __init__(self, commit: Commit, changed: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self._commit = commit
        self._changed = changed
        self._clock = clock
        self._rules: dict[str, ServiceRules] = {}
        self._revisions: dict[str, int] = {}  # store key -> mod revision, for a resync

    def apply(self, key: str, value: bytes | None, revision: int) -> None:
        service = key.removeprefix(PREFIX)
        if value is None:
            self._revisions.pop(key, None)
            if self._rules.pop(service, None) is None:
                return
        else:
            self._revisions[key] = revision
            self._rules[service] = _decode(value)
        self._changed(service)

    def known(self) -> dict[str, int]:
        return dict(self._revisions)

    def of(self, service: str) -> list[CheckSpec]:
        """The checks the service's instances take besides their own (none without rules)."""
        found = self._rules.get(service)
        return found.rules if found is not None else []

    def get(self, service: str) -> ServiceRules:
        return self._rules.get(service) or ServiceRules(service=service, rules=[])

    async def put(self, service: str, request: RulesRequest) -> ServiceRules:
        """Set the service's rules, replacing any; answered once this server applies them."""
        for position, check in enumerate(request.rules):
            if check.type != "metric":
                raise BadRequest(f"rules[{position}].type: service rules are metric checks, not {check.type}")
            if check.scrape is not None:
                raise BadRequest(f"rules[{position}].scrape: one URL cannot serve every instance; scrape in its checks")
        validate_checks(request.rules, "rules")
        validate_rules(request.rules, "rules")
        names = [check.name for check in request.rules if check.name is not None]
        if len(names) != len(set(names)):
            raise BadRequest(f"rules: two rules named {next(n for n in names if names.count(n) > 1)!r}")
        if not request.rules:  # no rules: as a clear, so that the empty record takes no place
            if service in self._rules:
                await self.clear(service)
            return self.get(service)
        if service not in self._rules and len(self._rules) >= MAX_SERVICES_WITH_RULES:
            raise TooBusy(f"rules: at most {MAX_SERVICES_WITH_RULES:,} services have rules; clear some first")
        rules = ServiceRules(service=service, rules=request.rules, updated_at=self._clock())
        await self._commit([], [Put(PREFIX + service, _encode(rules))])
        return self.get(service)

    async def clear(self, service: str) -> None:
        if service not in self._rules:
            raise NotFound(f"service {service!r} has no rules")
        await self._commit([], [Delete(PREFIX + service)])
