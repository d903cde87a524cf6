"""Ejections from clients' reports that no one client can forge: each reporter judged on its own
reports, and a quorum of reporters to eject.

The server hears reports from many clients (SDK balancers, gateways), and anyone may send them.
A reporter's reports on an instance are judged as its own balancer judges its traffic
(`outliers.py`): `consecutive` failures in a row, or, over its last WINDOW outcomes there (at
least MIN_REQUESTS), a failure rate above half and `rate_margin` above that reporter's failure
rate over everything it reports. A reporter whose reports tip over casts one vote against the
instance and starts again from nothing there. The instance is ejected when votes of `quorum`
distinct reporters, each cast within the last `window` seconds, stand together, or at once on
the vote of a trusted reporter (the operator's gateway, say); the detector's limits hold
whatever the votes say: at most `max_share` of the pool out, ejections that grow each time.

So one reporter's thousand failures are one vote. And a reporter's successes count only in its
own evidence: no reporter can keep in rotation, for a while or forever, an instance that other
reporters see failing. Pooling every report in one detector (as this server once did) let one
client eject alone and, with a flood of successes, mask everyone else's failures. This is how
Envoy's outlier detection would see it run in each client, with Serf/Lifeguard's rule that a
suspicion needs independent confirmations before it is believed; a reporter's own failure rate
stands in for Envoy's pool mean, weighted by requests rather than averaged over endpoints.
Where every reporter is one client behind one fault (its own network), each sees everything
fail and votes against everything: the quorum, and the share cap beyond it, are the defence.

On several servers (core/cluster.py) each reporter's evidence stays on the server it reports to,
and its votes go to every server: each records them all, so that any can take over, and one
server per service, chosen as active checks are, decides that service's ejections, which the
others `adopt`. One decider gives one answer: with each server deciding for itself from the same
votes, the order they arrive in would set the share cap and the ejection counts apart (two
servers each ejecting a different half of a pool of two), and each would set its own `until`.

What is kept is bounded: MAX_REPORTERS reporters, the least recently reporting forgotten; per
reporter, evidence on at most MAX_EVIDENCE instances, the least recently failing forgotten (an
instance without a failure in the reporter's last WINDOW outcomes there holds nothing); per
instance, at most `quorum` votes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from ..records import Ejection
from .outliers import MIN_REQUESTS, WINDOW, OutlierDetector, OutlierSettings, _Record

MAX_REPORTERS = 1024
MAX_EVIDENCE = 256  # instances per reporter, in every service together: 262,144 in all, about 45 MB
MAX_QUORUM = 16
RATE_WINDOW = 1024  # a reporter's own failure rate is over about its last this many outcomes
_MASK = (1 << WINDOW) - 1  # evidence: the last WINDOW outcomes as bits, 1 a failure, newest lowest


class ReportSettings(msgspec.Struct, frozen=True):
    quorum: int = 2  # distinct reporters whose votes eject together
    window: float = 30.0  # seconds a vote stands
    trusted: frozenset[str] = frozenset()  # reporters whose vote alone ejects


class Vote(msgspec.Struct, frozen=True):
    """A reporter's vote against an instance, as the server it reports to cast it."""

    reporter: str
    reason: str
    trusted: bool
    at: float  # when, on that server's clock


class Reporter:
    """One reporter's evidence: per instance it saw fail, its last outcomes there; and its failure rate."""

    __slots__ = ("evidence", "failures", "outcomes", "settings")

    def __init__(self, settings: OutlierSettings) -> None:
        self.settings = settings
        # (service, id) -> outcomes seen there << WINDOW | their bits; the least recently failing first
        self.evidence: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.outcomes = 0
        self.failures = 0

    def observe(self, service: str, iid: str, ok: bool) -> str | None:
        """Count one outcome; the reason for a vote when it tips this reporter's evidence over."""
        self.outcomes += 1
        self.failures += not ok
        if self.outcomes >= 2 * RATE_WINDOW:  # halved as it fills: recent outcomes weigh most
            self.outcomes //= 2
            self.failures //= 2
        key = (service, iid)
        evidence = self.evidence
        kept = evidence.get(key)
        if kept is None:
            if ok:
                return None  # nothing to say of an instance it never saw fail
            kept = 0
        seen = min((kept >> WINDOW) + 1, WINDOW)
        bits = ((kept << 1) | (not ok)) & _MASK
        reason = self._reason(seen, bits) if bits else None
        if reason is not None or not bits:  # a vote spends the evidence; without failures there is none
            evidence.pop(key, None)
            return reason
        evidence[key] = (seen << WINDOW) | bits
        evidence.move_to_end(key)
        if len(evidence) > MAX_EVIDENCE:
            evidence.popitem(last=False)
        return None

    def _reason(self, seen: int, bits: int) -> str | None:
        s = self.settings
        in_row = (~bits & (bits + 1)).bit_length() - 1  # the trailing ones: the latest failures in a row
        if in_row >= s.consecutive:
            return f"{in_row} failures in a row"
        if seen >= MIN_REQUESTS:
            rate = bits.bit_count() / seen
            if rate > 0.5 and rate > self.failures / self.outcomes + s.rate_margin:
                return f"failure rate {rate:.0%}, far above the reporter's own"
        return None


class Reporters:
    """Every reporter remembered, the least recently reporting first."""

    def __init__(self, settings: OutlierSettings | None = None) -> None:
        self.settings = settings or OutlierSettings()
        self._reporters: OrderedDict[str, Reporter] = OrderedDict()

    def judge(self, reporter: str) -> Reporter:
        """`reporter`'s evidence, to observe its reports with; remembered as the most recent."""
        found = self._reporters.get(reporter)
        if found is None:
            found = self._reporters[reporter] = Reporter(self.settings)
            if len(self._reporters) > MAX_REPORTERS:
                self._reporters.popitem(last=False)
        else:
            self._reporters.move_to_end(reporter)
        return found

    def __len__(self) -> int:
        return len(self._reporters)


class QuorumDetector(OutlierDetector):
    """One pool's ejections, each from the votes of enough reporters (or one trusted)."""

    def __init__(
        self,
        settings: OutlierSettings | None = None,
        reports: ReportSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, clock)
        self.reports = reports or ReportSettings()
        self._votes: dict[str, dict[str, float]] = {}  # id -> reporter -> when it voted, oldest first

    def vote(
        self,
        key: str,
        reporter: str,
        reason: str,
        trusted: bool,
        pool_size: int,
        at: float | None = None,
        decide: bool = True,
    ) -> Ejection | None:
        """`reporter`'s vote against `key`, for `reason`, cast `at` (now by default); the ejection
        when it completes a quorum. Without `decide`, only recorded: another server decides."""
        now, quorum = self._clock(), self.reports.quorum
        at = now if at is None else at
        if key in self.ejected or at <= now - self.reports.window:
            return None
        votes = self._votes.setdefault(key, {})
        for gone in [r for r, cast in votes.items() if cast <= now - self.reports.window]:
            del votes[gone]
        votes[reporter] = max(at, votes.pop(reporter, at))
        if decide and (trusted or len(votes) >= quorum):
            if trusted:
                reason = f"{reason} (a trusted reporter)"
            else:
                reason = f"{reason} ({len(votes)} reporters agree)" if len(votes) > 1 else f"{reason} (one reporter)"
            ejection = self.eject(key, reason, pool_size)
            if ejection is not None:
                del self._votes[key]
                return ejection
        while len(votes) > quorum:  # the share cap held it back: the latest votes stand for the next try
            del votes[next(iter(votes))]
        return None

    def adopt(self, key: str, ejection: Ejection | None) -> bool:
        """Take an ejection another server decided, whatever the cap says here (None: it ended
        there); whether that changed anything here."""
        if ejection is None:
            if self.ejected.pop(key, None) is None:
                return False
            record = self._records.get(key)
            if record is not None:
                record.returned_at = self._clock()
            self._next_release = min((e.until for e in self.ejected.values()), default=math.inf)
            return True
        if self.ejected.get(key) == ejection:
            return False
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        record.ejections = max(record.ejections, ejection.count)  # the next one here goes on from it
        self.ejected[key] = ejection
        self._next_release = min(self._next_release, ejection.until)
        self._votes.pop(key, None)
        return True

    def forget(self, key: str) -> None:
        super().forget(key)
        self._votes.pop(key, None)
