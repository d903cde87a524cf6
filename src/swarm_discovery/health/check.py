"""One check's live state and its thresholds (hysteresis).

A probe result moves the consecutive counts; the status changes only when a threshold is
crossed: `success_before_passing` successes to pass, `failures_before_warning` failures to warn,
`failures_before_critical` failures to go critical. A probe that passed slowly (`warn_latency`) or
answered 429 counts as a success that reports warning. A skipped probe (over a limit, see
`limits`) did not run: it changes the output and nothing else.
"""

from __future__ import annotations

import msgspec

from ..durations import parse_duration
from ..records import CheckSpec, CheckState, CheckStatus, check_name
from ..selector import Bindings
from .metric import WITHIN_LIMITS, MetricRule, rule_of
from .targets import target_of

MAX_OUTPUT = 512
# A probe holds a connection and a task while it waits; past this, a target is down, not slow.
MAX_TIMEOUT = 30.0
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2}
_WAITING = ("waiting for the first probe", "waiting for metrics")
WORST: tuple[CheckStatus, CheckStatus, CheckStatus] = ("passing", "warning", "critical")


def worst(statuses: list[CheckStatus]) -> CheckStatus:
    return WORST[max((_SEVERITY[s] for s in statuses), default=0)]


class ProbeResult(msgspec.Struct, frozen=True):
    status: CheckStatus  # what this one probe saw
    output: str
    duration: float = 0.0
    skipped: bool = False  # the probe did not run; `output` says why
    metrics: dict[str, float] | None = None  # what a scrape read, for the owner's metric checks to judge


class CheckRuntime:
    __slots__ = (
        "bindings",
        "calm",
        "critical_since",
        "criticals",
        "deregister_after",
        "duration",
        "failures",
        "interval",
        "last_checked",
        "max_age",
        "name",
        "output",
        "rule",
        "spec",
        "status",
        "successes",
        "target",
        "timeout",
        "ttl",
        "warn_latency",
    )

    def __init__(self, spec: CheckSpec, position: int, now: float) -> None:
        self.spec = spec
        self.name = check_name(spec, position)
        self.interval = parse_duration(spec.interval, "interval")
        self.timeout = min(parse_duration(spec.timeout, "timeout"), MAX_TIMEOUT)
        self.ttl = parse_duration(spec.ttl, "ttl") if spec.ttl else None
        self.target = target_of(spec) if spec.type != "ttl" else None
        self.rule: MetricRule | None = rule_of(spec, f"checks[{position}]") if spec.type == "metric" else None
        self.max_age = parse_duration(spec.max_age, "max_age") if spec.max_age else None
        self.warn_latency = parse_duration(spec.warn_latency, "warn_latency") if spec.warn_latency else None
        dca = spec.deregister_critical_after
        self.deregister_after = parse_duration(dca, "deregister_critical_after") if dca else None
        # A TTL check passes until its first TTL lapses, a metric check until metrics say otherwise;
        # a probe must earn its first pass (as in Consul).
        passive = spec.type in ("ttl", "metric")
        self.status: CheckStatus = spec.initial_status or ("passing" if passive else "critical")
        self.output = "" if spec.type == "ttl" or spec.initial_status else _WAITING[spec.type == "metric"]
        self.last_checked: float | None = None
        self.duration: float | None = None
        self.successes = 0
        self.failures = 0
        self.bindings: Bindings | None = None  # what a metric check judged last
        self.criticals = 0  # consecutive evaluations of a metric check that called for critical
        self.calm = 0  # consecutive ones that did not
        # Counted from now even after a restart: nothing is deregistered before its checks ran.
        self.critical_since: float | None = now if self.status == "critical" else None

    def observe(self, result: ProbeResult, now: float) -> bool:
        """Apply one probe result; True when the status changed."""
        self.output = result.output[:MAX_OUTPUT]
        if result.skipped:
            return False
        self.last_checked = now
        self.duration = result.duration
        spec = self.spec
        new: CheckStatus
        if result.status == "critical":
            self.failures += 1
            self.successes = 0
            to_critical = max(spec.failures_before_critical, 1)
            to_warning = max(spec.failures_before_warning or to_critical, 1)
            if self.failures >= to_critical:
                new = "critical"
            elif self.failures >= to_warning and self.status == "passing":
                new = "warning"
            else:  # a failure never improves the status
                new = self.status
        else:
            self.successes += 1
            self.failures = 0
            passing_now = self.status != "critical" or self.successes >= max(spec.success_before_passing, 1)
            new = result.status if passing_now else self.status
        return self._become(new, now)

    def judge(self, status: CheckStatus, output: str, now: float) -> bool:
        """Apply one evaluation of a metric rule; True when the status changed.

        As for probes, consecutive evaluations count: `failures_before_warning` of warning or
        worse to warn, `failures_before_critical` of critical to go critical, and
        `success_before_passing` of better than critical to leave critical (or passing ones to
        leave warning), so one spike does not flap the instance.
        """
        self.output = output[:MAX_OUTPUT]
        self.last_checked = now
        spec = self.spec
        if status == "passing":
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        self.criticals = self.criticals + 1 if status == "critical" else 0
        self.calm = 0 if status == "critical" else self.calm + 1
        to_critical = max(spec.failures_before_critical, 1)
        to_warning = max(spec.failures_before_warning or to_critical, 1)
        to_pass = max(spec.success_before_passing, 1)
        new = self.status
        if self.criticals >= to_critical:
            new = "critical"
        elif self.status == "critical":
            new = status if self.calm >= to_pass else "critical"
        elif status != "passing" and self.failures >= to_warning:
            new = "warning"
        elif status == "passing" and self.successes >= to_pass:
            new = "passing"
        return self._become(new, now)

    def _become(self, status: CheckStatus, now: float) -> bool:
        if status == self.status:
            return False
        self.status = status
        self.critical_since = now if status == "critical" else None
        return True

    def stale(self, output: str, now: float) -> bool:
        """A metric check's metrics are older than its max_age: `stale_status`, never better than it
        was (a GPU that went silent hot stays critical), and its good evaluations start again."""
        self.successes = self.calm = 0
        return self.set(worst([self.status, self.spec.stale_status]), output, now)

    def set(self, status: CheckStatus, output: str, now: float) -> bool:
        """Set the status outright (a TTL heartbeat or its lapse); True when it changed."""
        self.output = output[:MAX_OUTPUT]
        self.last_checked = now
        return self._become(status, now)

    def state(self, live: bool = False) -> CheckState:
        """What readers see; `live`, with the values a metric check's rules read last."""
        output = self.output
        if live and output == WITHIN_LIMITS and self.rule is not None and self.bindings is not None:
            output = f"{WITHIN_LIMITS} ({self.rule.seen(self.bindings)})"
        return CheckState(
            name=self.name,
            type=self.spec.type,
            status=self.status,
            output=output,
            last_checked=self.last_checked,
            duration_ms=round(self.duration * 1000, 3) if self.duration is not None else None,
            successes=self.successes,
            failures=self.failures,
            critical_since=self.critical_since,
        )
