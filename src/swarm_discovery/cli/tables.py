"""Tables that fit the terminal: empty columns left out, and id, address and status never cut.

`fit` takes columns in order of importance. A column of prose (`wrap`: a reason, an output)
wraps, given at least `MIN_WRAP` characters; any other keeps its full width. When the columns
do not fit, the least important are left out, and the caption says which (`--json` has all);
those marked `keep` (id, address, status) are always shown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from ..acl import Rules, TokenView
from ..records import CheckSpec, CheckState, InstanceView, Location, NodeView, ServiceSummary, check_name
from .output import status_text

MIN_WRAP = 20
GAP = 3  # between two columns: padding, separator, padding (the edges have none)


class Column:
    def __init__(self, header: str, cells: Sequence[str | Text], keep: bool = False, wrap: bool = False) -> None:
        self.header = header
        self.cells = [cell if isinstance(cell, Text) else Text(cell) for cell in cells]
        self.keep = keep
        self.wrap = wrap

    @property
    def longest(self) -> int:
        return max([len(self.header), *(cell.cell_len for cell in self.cells)])

    @property
    def least(self) -> int:
        return min(self.longest, MIN_WRAP) if self.wrap else self.longest

    @property
    def empty(self) -> bool:
        return not any(cell.plain for cell in self.cells)


def fit(columns: Sequence[Column], width: int) -> Table:
    shown = [column for column in columns if column.keep or not column.empty]
    left_out: list[str] = []
    while sum(column.least + GAP for column in shown) - GAP > width:
        droppable = [column for column in shown if not column.keep]
        if not droppable:
            break
        shown.remove(droppable[-1])
        left_out.insert(0, droppable[-1].header)
    caption = f"not shown at this width: {', '.join(left_out)} (--json has all)" if left_out else None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption=caption, caption_justify="left")
    for column in shown:
        if column.wrap:
            table.add_column(column.header, overflow="fold")
        else:
            table.add_column(column.header, no_wrap=True, min_width=column.longest)
    for row in zip(*(column.cells for column in shown), strict=True):
        table.add_row(*row)
    return table


def _place(location: Location | None) -> str:
    return "/".join(part for part in (location.region, location.zone) if part) if location else ""


def _failing(checks: Sequence[CheckState]) -> str:
    return next((f"{c.name}: {c.output}" for c in checks if c.status != "passing" and c.output), "")


def instance_reason(i: InstanceView) -> str:
    """Why the instance has its status, when it is not plainly passing."""
    if i.ejected is not None:
        return f"ejected by clients' reports: {i.ejected.reason}"
    if i.maintenance is not None:
        return i.maintenance.reason
    own = _failing(i.check_states)
    if own:
        return own
    # Its node's checks count towards its status but are not among its own.
    if i.status == "critical" and i.node and all(c.status == "passing" for c in i.check_states):
        return f"node {i.node} is critical"
    return ""


def instances_table(found: Sequence[InstanceView], width: int) -> Table:
    return fit(
        [
            Column("id", [i.id or "" for i in found], keep=True),
            Column("address", [f"{i.address}:{i.port}" for i in found], keep=True),
            Column("status", [status_text(i.status) for i in found], keep=True),
            Column("reason", [instance_reason(i) for i in found], wrap=True),
            Column("node", [i.node or "" for i in found]),
            Column("location", [_place(i.location) for i in found]),
            Column("version", [i.version or "" for i in found]),
            Column("tags", [", ".join(i.tags) for i in found], wrap=True),
            Column("metrics", [" ".join(f"{k}={v:g}" for k, v in i.metrics.items()) for i in found], wrap=True),
            Column(
                "capabilities",
                [json.dumps(i.capabilities, separators=(",", ":")) if i.capabilities else "" for i in found],
            ),
        ],
        width,
    )


def _compact(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else ""


def _gpus(node: NodeView) -> str:
    return ", ".join(f"{g.count}x {g.model} {g.memory_gb:g}GB" for g in node.resources.gpus)


def _clock(when: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) if when else "never"


def _number(value: float | None) -> str:
    return f"{value:g}" if value else ""


def nodes_table(found: Sequence[NodeView], width: int) -> Table:
    return fit(
        [
            Column("id", [n.id or "" for n in found], keep=True),
            Column("kind", [n.kind for n in found]),
            Column("status", [status_text(n.status) for n in found], keep=True),
            Column("address", [n.address or "" for n in found], keep=True),
            Column("reason", [_failing(n.check_states) for n in found], wrap=True),
            Column("location", [_place(n.location) for n in found]),
            Column(
                "gpus", [", ".join(f"{g.count}x {g.model} {g.memory_gb:g}GB" for g in n.resources.gpus) for n in found]
            ),
            Column("cpus", [_number(n.resources.cpu_cores) for n in found]),
            Column("memory GB", [_number(n.resources.memory_gb) for n in found]),
            Column("storage GB", [_number(n.resources.storage_gb) for n in found]),
            Column("labels", [" ".join(f"{k}={v}" for k, v in n.labels.items()) for n in found], wrap=True),
        ],
        width,
    )


def checks_table(found: Sequence[tuple[str | None, CheckState]], width: int) -> Table:
    """Checks, each with the node it belongs to (None: the instance's own)."""
    return fit(
        [
            Column("check", [f"node {node}: {c.name}" if node else c.name for node, c in found], keep=True),
            Column("status", [status_text(c.status) for _, c in found], keep=True),
            Column("output", [c.output for _, c in found], wrap=True),
            Column("type", [c.type for _, c in found]),
            Column(
                "checked",
                [
                    time.strftime("%H:%M:%S", time.localtime(c.last_checked)) if c.last_checked else "never"
                    for _, c in found
                ],
            ),
            Column("took", [f"{c.duration_ms:.1f} ms" if c.duration_ms is not None else "" for _, c in found]),
            # Consecutive probe results: a TTL check has no probes, only heartbeats.
            Column("ok/fail", ["" if c.type == "ttl" else f"{c.successes}/{c.failures}" for _, c in found]),
        ],
        width,
    )


def rules_table(rules: Sequence[CheckSpec], width: int) -> Table:
    return fit(
        [
            Column("rule", [check_name(r, i) for i, r in enumerate(rules)], keep=True),
            Column("critical", [r.critical or "" for r in rules], wrap=True),
            Column("warning", [r.warning or "" for r in rules], wrap=True),
            Column("max age", [r.max_age or "" for r in rules]),
            Column("scrape", [r.scrape or "" for r in rules]),
        ],
        width,
    )


def services_table(found: Sequence[ServiceSummary], width: int) -> Table:
    def healthy(s: ServiceSummary) -> Text:
        style = "green" if s.healthy == s.instances else "yellow" if s.healthy else "red"
        return Text(str(s.healthy), style=style)

    return fit(
        [
            Column("service", [s.name for s in found], keep=True),
            Column("instances", [str(s.instances) for s in found], keep=True),
            Column("healthy", [healthy(s) for s in found], keep=True),
            Column("tags", [", ".join(s.tags) for s in found], wrap=True),
            Column("versions", [", ".join(s.versions) for s in found], wrap=True),
        ],
        width,
    )


def _rules(rules: Rules) -> str:
    sections = (("services", rules.services), ("nodes", rules.nodes), ("reports", rules.reports))
    parts = [
        section + " " + ", ".join(f"{prefix or '*'}={level}" for prefix, level in levels.items())
        for section, levels in sections
        if levels
    ]
    if rules.operator:
        parts.append(f"operator={rules.operator}")
    return "; ".join(parts) or "nothing"


def tokens_table(found: Sequence[TokenView], width: int) -> Table:
    return fit(
        [
            Column("id", [t.id for t in found], keep=True),
            Column("rules", ["management" if t.management else _rules(t.rules) for t in found], wrap=True),
            Column("description", [t.description for t in found], wrap=True),
            Column("identities", [", ".join(t.identities) for t in found], wrap=True),
            Column("created", [time.strftime("%Y-%m-%d %H:%M", time.localtime(t.created)) for t in found]),
        ],
        width,
    )
