"""The CEL subset compiled to Python agrees with cel-expr-python, record by record.

Every expression below that CEL accepts is evaluated both ways on every record: the subset must
say "match" exactly when CEL does. Records mix every JSON type, missing keys, NaN and -0.0, so
that type mismatches, errors and their absorption by && and || are all exercised.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from swarm_discovery.cel_subset import Defer, Unsupported, compile_subset
from swarm_discovery.errors import BadRequest
from swarm_discovery.selector import Bindings, compile_selector

RECORDS: list[dict[str, Any]] = [
    {"i": 1, "d": 1.5, "s": "abc", "b": True, "n": None, "l": [1, "x", 2.0], "m": {"k": 1}, "port": 8050},
    {"i": 80, "d": 80.0, "s": "", "b": False, "l": [], "m": {}, "port": 8150, "tags": ["vllm"]},
    {"i": -1, "d": float("nan"), "s": "1", "b": 1, "n": "x", "l": ["abc"], "m": {"k": "1"}, "tags": []},
    {},
    {"i": 2**62, "d": -0.0, "s": "abd", "b": None, "l": [[1]], "m": {"k": {"z": 1}}, "n": {"x": 1}},
    {"capabilities": {"gpu": {"model": "H100", "memory_gb": 80, "count": 8}}, "tags": ["vllm", "shard-1"]},
    {"capabilities": {"gpu": {"model": "L4", "memory_gb": 24.0}}, "port": 8000, "tags": ["x"]},
    {"capabilities": {"gpu": None}, "port": "8000"},
]
NODES: list[dict[str, Any]] = [{}, {"kind": "compute", "labels": {"tier": "gold"}}]

FIELDS = [
    "instance.i",
    "instance.d",
    "instance.s",
    "instance.b",
    "instance.n",
    "instance.l",
    "instance.m",
    "instance.m.k",
    "instance.missing",
    "instance.m.missing",
    "instance.l[0]",
    "instance.l[1.0]",
    "instance.m['k']",
    "size(instance.s)",
    "instance.l.size()",
    "node.kind",
    "-instance.i",
    "instance.i + 1",
    "instance.d * 2.0",
    "instance.i % 3",
    "instance.i / 0",
    "instance.s + 'x'",
    "instance.l + [1]",
]
LITERALS = ["1", "1.0", "-1", "80", "0x10", '"abc"', "'1'", "true", "false", "null", '[1, "x"]', "[]", "1e3"]
OPERATORS = ["==", "!=", "<", "<=", ">", ">=", "in"]
COMPOUND = [
    "instance.capabilities.gpu.memory_gb >= 80",
    'instance.capabilities.gpu.memory_gb >= 80 && "vllm" in instance.tags',
    "instance.capabilities.gpu.memory_gb >= 80 && instance.port < 8100",
    "instance.capabilities.gpu.memory_gb >= 80 || instance.port < 8100",
    "!(instance.port < 8100)",
    "!instance.b",
    "instance.missing && false",
    "false && instance.missing",
    "instance.missing || true",
    "true || instance.missing",
    "instance.i && true",
    "instance.i || true",
    "instance.b ? instance.i > 0 : instance.d > 0",
    "has(instance.capabilities.gpu)",
    "has(instance.capabilities.gpu.model) && instance.capabilities.gpu.model == 'H100'",
    "has(instance.m.k)",
    "has(instance.s.k)",
    'instance.s.startsWith("a")',
    "instance.s.endsWith('c') || instance.s.contains('b')",
    "instance.i.startsWith('a')",
    'node.labels.tier == "gold" && instance.port >= 8000',
    "'k' in instance.m",
    "instance.s in instance.l",
    "instance.l == [1, 'x', 2]",
    "instance.m == instance.m",
    "instance.d == instance.d",
    "instance.i == instance.d",
    "instance.l[5] == 1",
    "instance.l[-1] == 1",
    "instance.l[0.5] == 1",
    "(instance.port < 8100) == true",
    "instance.port > -8000 && -instance.port < 0",
    "instance.i / 0 == 1 || instance.port - 8000 < 100",
    "instance.capabilities.gpu.memory_gb / 8 >= 10 && instance.capabilities.gpu.count * 10 > instance.port / 100",
    "instance.d / 0.0 > 1.0 && instance.i - 1 == 0",
]


def expressions() -> list[str]:
    simple = [f"{f} {op} {lit}" for f, op, lit in itertools.product(FIELDS, OPERATORS, LITERALS)]
    simple += [f"{lit} {op} {f}" for f, op, lit in itertools.product(FIELDS[:8], ["==", "<", "in"], LITERALS)]
    return simple + COMPOUND


def accepted_by_cel() -> list[str]:
    accepted = []
    for source in expressions():
        try:
            compile_selector(source)
        except BadRequest:
            continue
        accepted.append(source)
    return accepted


ACCEPTED = accepted_by_cel()


@pytest.mark.parametrize("source", ACCEPTED)
def test_subset_agrees_with_cel(source: str) -> None:
    selector = compile_selector(source)
    fast = compile_subset(source)
    for instance, node in itertools.product(RECORDS, NODES):
        bindings = Bindings(instance, node)
        expected = selector.matches_in_cel(bindings)
        try:
            got = fast(instance, node) is True
        except Defer:
            continue
        assert got == expected, f"{source} on {instance} / {node}: subset says {got}, CEL says {expected}"


def test_the_subset_covers_nearly_every_selector_here() -> None:
    covered = 0
    for source in ACCEPTED:
        try:
            compile_subset(source)
            covered += 1
        except Unsupported:
            pass
    assert len(ACCEPTED) > 500
    assert covered / len(ACCEPTED) > 0.95


@pytest.mark.parametrize(
    "source",
    [
        "double(instance.port) > 8000.0",  # conversions
        "instance.tags.exists(t, t == 'vllm')",  # macros
        "instance.s.matches('^a')",  # regexes (RE2 is not Python's re)
        '"a\\tb" == instance.s',  # escapes
        "instance.i > 1u",  # unsigned
        "{'k': 1} == instance.m",  # map literals
        "instance.i > 1 // a comment",  # comments
    ],
)
def test_beyond_the_subset_cel_decides(source: str) -> None:
    with pytest.raises(Unsupported):
        compile_subset(source)
    selector = compile_selector(source)
    for instance in RECORDS:
        bindings = Bindings(instance, {})
        assert selector.matches(bindings) == selector.matches_in_cel(bindings)


def test_values_the_subset_does_not_model_go_to_cel() -> None:
    huge = {"i": 2**64, "l": [2**64], "m": {"k": 1}}
    for source in ["instance.i > 1", "instance.i == 1", "1 in instance.l", "1 in instance.m"]:
        with pytest.raises(Defer):
            compile_subset(source)(huge, {})
        selector = compile_selector(source)
        assert selector.matches(Bindings(huge, {})) == selector.matches_in_cel(Bindings(huge, {}))
