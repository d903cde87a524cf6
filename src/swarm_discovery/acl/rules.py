"""Rules, as a token carries them, and the policy they compile to.

The shape is Consul's, cut to what a provider network needs: for services, nodes and reports a
map of name prefixes to a level, the longest matching prefix deciding (`""` matches every name),
and one level for operator work (server info, metrics, tokens). "write" implies "read"; a name no
prefix matches is denied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from ..records import Spec

Level = Literal["read", "write"]
Section = Literal["services", "nodes", "reports", "operator"]
MAX_PREFIXES = 256  # per section of one token's rules
# A prefix of a service or node name (or "", every name): the same characters names may have.
Prefix = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?(?!\n)$")]
Prefixes = Annotated[dict[Prefix, Level], msgspec.Meta(max_length=MAX_PREFIXES)]


class Rules(Spec, kw_only=True):
    services: Prefixes = {}
    nodes: Prefixes = {}
    reports: Annotated[dict[Prefix, Literal["write"]], msgspec.Meta(max_length=MAX_PREFIXES)] = {}
    operator: Level | None = None


_RANK = {"read": 1, "write": 2}


class _Prefixes:
    """Longest-prefix lookup over one section; names are short, so checking each prefix is quick."""

    __slots__ = ("_exact", "_ordered", "any", "everything")

    def __init__(self, levels: Mapping[str, str]) -> None:
        self._exact = {p: _RANK[level] for p, level in levels.items()}
        self._ordered = sorted(self._exact.items(), key=lambda item: -len(item[0]))
        self.any = bool(levels)
        # No level is below "read", so a rule for "" makes every name at least readable.
        self.everything = self._exact.get("", 0)

    def rank(self, name: str) -> int:
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        for prefix, rank in self._ordered:
            if name.startswith(prefix):
                return rank
        return 0


class Policy:
    """What one caller may do; `allows` is asked on every request, so it is cheap."""

    __slots__ = ("_operator", "_sections")

    def __init__(self, rules: Rules) -> None:
        self._sections = {
            "services": _Prefixes(rules.services),
            "nodes": _Prefixes(rules.nodes),
            "reports": _Prefixes(rules.reports),
        }
        self._operator = _RANK[rules.operator] if rules.operator else 0

    def allows(self, section: Section, name: str, level: Level) -> bool:
        needed = _RANK[level]
        if section == "operator":
            return self._operator >= needed
        return self._sections[section].rank(name) >= needed

    def reads_all(self, section: Section) -> bool:
        """Whether every name of `section` is readable: then listings need no filtering."""
        if section == "operator":
            return self._operator >= 1
        return self._sections[section].everything >= 1

    def has_rules(self, section: Section) -> bool:
        """Whether anything at all of `section` is allowed: a listing can then be filtered, not refused."""
        if section == "operator":
            return self._operator >= 1
        return self._sections[section].any


MANAGEMENT = Rules(services={"": "write"}, nodes={"": "write"}, reports={"": "write"}, operator="write")
READ_ALL = Rules(services={"": "read"}, nodes={"": "read"})
NOTHING = Rules()
