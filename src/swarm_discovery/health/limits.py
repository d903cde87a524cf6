"""Sharing what probes may use: how many run at once, per target and per registrant, and how often.

A probe holds a connection, a socket and a task until its target answers or its timeout ends, so
checks on a target that never answers hold them for the whole timeout. Without bounds one
registrant's checks could fill the shared pool, and everyone else's probes would wait for a
connection until they timed out and went critical. The gate bounds probes in flight per target
(host:port as the check writes it), per registrant and in all, and meters each registrant's
probes with a token bucket. A probe over a bound is skipped for that round rather than queued:
the check keeps its status (a probe that did not run is no evidence), its output says why, and
it counts as `swarm_probes_total{result="skipped"}`.

A registrant is whoever registered the checks, as the registry stores it with the instance
(see `health.monitor.registrant_of`); without one, the instance's service (or the node), so
each service has its own share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import msgspec

from ..buckets import Buckets

K = TypeVar("K")

# The most probes in flight in all, whoever they are for: each holds a socket and a task.
MAX_IN_FLIGHT = 1024


class ProbeSettings(msgspec.Struct, frozen=True):
    per_target: int = 128  # probes in flight to one host:port
    per_registrant: int = 256  # probes in flight for one registrant
    rate: float = 2000.0  # probes a second per registrant; a burst of one second's worth
    allow: tuple[str, ...] = ()  # networks probes may reach (empty: everywhere)
    deny: tuple[str, ...] = ()  # networks they may not; deny wins
    server: tuple[str, int] | None = None  # this server's own HTTP address, never a probe target
    ca_file: str | None = None  # the CAs HTTPS probes trust (--check-ca); None: the system's


class ProbeGate:
    """`admit` before a probe (None, or why it must skip this round), `release` after it."""

    def __init__(self, settings: ProbeSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._in_flight = 0
        self._per_target: dict[tuple[str, int], int] = {}
        self._per_registrant: dict[str, int] = {}
        # Buckets of registrants that still have checks; `leave` drops a registrant's with its last.
        self._buckets: Buckets[str] = Buckets(settings.rate, settings.rate)
        self._checks: dict[str, int] = {}

    def join(self, registrant: str) -> None:
        """A check of `registrant` was added."""
        self._checks[registrant] = self._checks.get(registrant, 0) + 1

    def leave(self, registrant: str) -> None:
        """A check of `registrant` was removed."""
        left = self._checks.get(registrant, 0) - 1
        if left > 0:
            self._checks[registrant] = left
        else:
            self._checks.pop(registrant, None)
            self._buckets.forget(registrant)

    def admit(self, registrant: str, target: tuple[str, int]) -> str | None:
        s = self._settings
        if self._in_flight >= MAX_IN_FLIGHT:
            return f"probe skipped: {MAX_IN_FLIGHT} probes in flight on this server"
        if self._per_registrant.get(registrant, 0) >= s.per_registrant:
            return f"probe skipped: {registrant} has {s.per_registrant} probes in flight (--probe-per-registrant)"
        if self._per_target.get(target, 0) >= s.per_target:
            host, port = target
            return f"probe skipped: {host}:{port} has {s.per_target} probes in flight (--probe-per-target)"
        if self._buckets.take(registrant, self._clock()):
            return f"probe skipped: {registrant} is over {s.rate:g} probes/s (--probe-rate)"
        self._in_flight += 1
        self._per_registrant[registrant] = self._per_registrant.get(registrant, 0) + 1
        self._per_target[target] = self._per_target.get(target, 0) + 1
        return None

    def release(self, registrant: str, target: tuple[str, int]) -> None:
        self._in_flight -= 1
        _decrement(self._per_registrant, registrant)
        _decrement(self._per_target, target)


def _decrement(counts: dict[K, int], key: K) -> None:
    """Counts of zero are dropped, so the maps hold only what is in flight."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
