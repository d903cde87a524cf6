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

import msgspec

from ..errors import BadRequest
from ..records import CheckSpec, CheckStatus, InstanceView, NodeView
from ..selector import Bindings, Selector, compile_selector

# A field path the expression reads: `instance.metrics.gpu_temp_c`, `node.metrics["x"]` (a name
# followed by `(` is a method: `instance.tags.exists(...)` reads `instance.tags`).
_PATH = re.compile(r"\b(instance|node)((?:\.[A-Za-z_][A-Za-z0-9_]*+(?!\s*\()|\[\s*(?:\"[^\"]*\"|'[^']*')\s*\])+)")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:\"([^\"]*)\"|'([^']*)')\s*\]")
WITHIN_LIMITS = "within limits"
MAX_SHOWN = 8  # values an output names: enough for any rule a person writes, bounded for one that is not


def _steps(path: str) -> tuple[str, ...]:
    return tuple(m.group(1) or m.group(2) or m.group(3) or "" for m in _STEP.finditer(path))


class MetricRule:
    """The compiled expressions of one metric check, and the paths they read."""

    __slots__ = ("_shown", "critical", "paths", "reads_instance", "reads_node", "warning")

    def __init__(self, spec: CheckSpec, field: str) -> None:
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
                _check_on_blank(selector, self.paths, f"{field}.{name}")

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
            if fired:  # the values first: a long expression is what the output's bound cuts
                return status, f"{status}: {self.seen(bindings)} ({selector.source})"
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


# Every field a record has, as rules read it (metrics and capacities are filled in per rule).
_BLANK_INSTANCE = InstanceView(address="", port=1, status="passing", index=0, registered_at=0, updated_at=0)
_BLANK_NODE = NodeView(status="passing", index=0, registered_at=0, updated_at=0)
_DOUBLES = {"instance": ("metrics", "capacity"), "node": ("metrics",)}


def _fields(view: msgspec.Struct) -> dict[str, Any]:
    """Every field of `view` as CEL reads it (tuples as lists)."""
    fields = {name: msgspec.to_builtins(getattr(view, name)) for name in view.__struct_fields__}
    return {name: list(value) if type(value) is tuple else value for name, value in fields.items()}


def _check_on_blank(selector: Selector, paths: tuple[tuple[str, tuple[str, ...]], ...], field: str) -> None:
    """Refuse an expression that fails on any record: evaluated once on a blank one with 1.0 at every
    metric and capacity it reads, it must give true or false, or fail only for a missing field (a
    metric not sent yet, a capability some records lack). So `2 * instance.capacity.c` (CEL has no
    arithmetic across int and double), `1 / 0 > 1` or `instance.metrics.q + 1.0` are 400s at
    registration rather than rules that quietly never fire."""
    roots = {"instance": _fields(_BLANK_INSTANCE), "node": _fields(_BLANK_NODE)}
    for root, steps in paths:
        if len(steps) == 2 and steps[0] in _DOUBLES[root]:
            roots[root][steps[0]] = {**roots[root][steps[0]], steps[1]: 1.0}
    fault = selector.fault_on(Bindings(roots["instance"], roots["node"]))
    if fault is None or "not found" in fault.lower():
        return
    hint = ""
    if "no matching overload" in fault.lower():
        hint = "; metrics and capacities are doubles, so write numbers beside them as doubles (2.0, not 2)"
    raise BadRequest(f"{field}: {fault.removeprefix('UNKNOWN: ').removeprefix('INVALID_ARGUMENT: ')}{hint}")


_rules: OrderedDict[tuple[str | None, str | None], MetricRule] = OrderedDict()
_CACHE_SIZE = 1024


def rule_of(spec: CheckSpec, field: str) -> MetricRule:
    """The rule of a metric check, compiled once for every check with the same expressions (a
    fleet registers the same rule thousands of times)."""
    if spec.critical is None and spec.warning is None and spec.scrape is None:
        raise BadRequest(f"{field}: a metric check needs `critical`, `warning` or `scrape` (to gather metrics only)")
    key = (spec.critical, spec.warning)
    rule = _rules.get(key)
    if rule is None:
        rule = _rules[key] = MetricRule(spec, field)
        if len(_rules) > _CACHE_SIZE:
            _rules.popitem(last=False)
    return rule


def validate_rules(checks: list[CheckSpec], field: str = "checks", of_node: bool = False) -> None:
    """Compile every metric check's rule: a bad one is a BadRequest naming the check and the spot.
    A node's rules read `node` only: it has no `instance`."""
    for position, check in enumerate(checks):
        if check.type == "metric" and rule_of(check, f"{field}[{position}]").reads_instance and of_node:
            raise BadRequest(f"{field}[{position}]: a node's rules read `node`, not `instance`")
