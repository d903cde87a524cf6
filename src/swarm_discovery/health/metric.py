"""Metric rules: a `metric` check's CEL expressions, compiled once and judged on live metrics.

A rule sees `instance` (with its current `metrics`) and `node` (with the metrics of its own
heartbeats), the same names selectors use. `critical` is tried first, then `warning`; neither
firing is `passing`. An expression that errors on a record (a metric not sent yet) does not fire,
as a selector does not match: the output says so, so a typo in a metric name shows.

Metrics and capacities are doubles, and CEL has no arithmetic across int and double
(`2 * instance.capacity.max_concurrency` is "no matching overload" on every record): validation
evaluates each expression once on a record holding 1.0 wherever it reads, so that mistake is a
400 at registration rather than a rule that quietly never fires.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from ..errors import BadRequest
from ..records import CheckSpec, CheckStatus
from ..selector import Bindings, Selector, compile_selector

# A field path the expression reads: `instance.metrics.gpu_temp_c`, `node.metrics["x"]`.
_PATH = re.compile(r"\b(instance|node)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*(?:\"[^\"]*\"|'[^']*')\s*\])+)")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:\"([^\"]*)\"|'([^']*)')\s*\]")
WITHIN_LIMITS = "within limits"
MAX_SHOWN = 8  # values an output names: enough for any rule a person writes, bounded for one that is not


def _steps(path: str) -> tuple[str, ...]:
    return tuple(m.group(1) or m.group(2) or m.group(3) or "" for m in _STEP.finditer(path))


class MetricRule:
    """The compiled expressions of one metric check, and the paths they read."""

    __slots__ = ("_shown", "critical", "paths", "reads_instance", "reads_node", "warning")

    def __init__(self, spec: CheckSpec, field: str) -> None:
        if spec.critical is None and spec.warning is None and spec.scrape is None:
            raise BadRequest(
                f"{field}: a metric check needs `critical`, `warning` or `scrape` (to gather metrics only)"
            )
        self.critical = _compiled(spec.critical, f"{field}.critical")
        self.warning = _compiled(spec.warning, f"{field}.warning")
        found: dict[tuple[str, tuple[str, ...]], None] = {}
        for source in (spec.critical, spec.warning):
            for match in _PATH.finditer(source or ""):
                found[(match.group(1), _steps(match.group(2)))] = None
        self.paths = tuple(found)
        self.reads_node = any(root == "node" for root, _ in self.paths)
        self.reads_instance = any(root == "instance" for root, _ in self.paths)
        self._shown = tuple((_short(root, steps), root == "instance", steps) for root, steps in self.paths[:MAX_SHOWN])
        for selector, name in ((self.critical, "critical"), (self.warning, "warning")):
            if selector is not None:
                _check_types(selector, self.paths, f"{field}.{name}")

    def judge(self, bindings: Bindings, gathered: str = "") -> tuple[CheckStatus, str]:
        """The status these metrics call for, and an output naming the expression and the values it
        saw; WITHIN_LIMITS alone when neither fired (every heartbeat judges, and a fleet's outputs
        are not written out each time: `seen` says the values when asked). A check that only
        gathers metrics (a scrape without expressions) passes with `gathered`."""
        if self.critical is None and self.warning is None:
            return "passing", gathered
        judged: tuple[tuple[CheckStatus, Selector | None], ...] = (
            ("critical", self.critical),
            ("warning", self.warning),
        )
        for status, selector in judged:
            if selector is None:
                continue
            try:
                fired = selector.matches(bindings)
            except BadRequest as exc:  # the expression's own fault, found on this record
                return "passing", f"{status} could not be evaluated: {exc}"
            if fired:
                return status, f"{status}: {selector.source} ({self.seen(bindings)})"
        return "passing", WITHIN_LIMITS

    def seen(self, bindings: Bindings) -> str:
        """The values the expressions read, as `name=value, ...`."""
        shown = []
        for label, of_instance, steps in self._shown:
            value: Any = bindings.instance if of_instance else bindings.node
            for step in steps:
                value = value.get(step) if type(value) is dict else None
            shown.append(f"{label}={'missing' if value is None else _number(value)}")
        return ", ".join(shown)


def _short(root: str, steps: tuple[str, ...]) -> str:
    """A path as an output names it: an instance's metrics by name alone, a node's after `node.`."""
    if steps[:1] == ("metrics",) and len(steps) > 1:
        steps = steps[1:]
    return ".".join(steps) if root == "instance" else f"node.{'.'.join(steps)}"


def _number(value: Any) -> str:
    return f"{value:g}" if type(value) is float else str(value)


def _compiled(source: str | None, field: str) -> Selector | None:
    return compile_selector(source, field) if source is not None else None


def _check_types(selector: Selector, paths: tuple[tuple[str, tuple[str, ...]], ...], field: str) -> None:
    """Refuse an expression that errors on a record holding 1.0 wherever it reads: its numbers and
    operators cannot go together, whatever the metrics say."""
    roots: dict[str, dict[str, Any]] = {"instance": {}, "node": {}}
    for root, steps in paths:
        if not steps:
            continue
        container = roots[root]
        for step in steps[:-1]:
            child = container.get(step)
            if type(child) is not dict:
                child = container[step] = {}
            container = child
        container.setdefault(steps[-1], 1.0)
    error = selector.error_in_cel(Bindings(roots["instance"], roots["node"]))
    if error is not None and "no matching overload" in error.lower():
        hint = "; metrics and capacities are doubles, so write numbers as doubles (2.0, not 2)"
        raise BadRequest(f"{field}: {error.removeprefix('UNKNOWN: ')}{hint}")


_rules: OrderedDict[tuple[str | None, str | None], MetricRule] = OrderedDict()
_CACHE_SIZE = 1024


def rule_of(spec: CheckSpec, field: str) -> MetricRule:
    """The rule of a metric check, compiled once for every check with the same expressions (a
    fleet registers the same rule thousands of times)."""
    key = (spec.critical, spec.warning)
    rule = _rules.get(key)
    if rule is None:
        rule = _rules[key] = MetricRule(spec, field)
        if len(_rules) > _CACHE_SIZE:
            _rules.popitem(last=False)
    return rule


def validate_rules(checks: list[CheckSpec], field: str = "checks") -> None:
    """Compile every metric check's rule: a bad one is a BadRequest naming the check and the spot."""
    for position, check in enumerate(checks):
        if check.type == "metric":
            rule_of(check, f"{field}[{position}]")
