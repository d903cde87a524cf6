"""Arithmetic in the CEL subset gives cel-expr-python's values, one by one.

Not only whether a selector matches: every result is compared with CEL's, an int with an int, a
double with a double down to the sign of zero and NaN, an error with an error. Random operands
cover int64's ends, -0.0, NaN, infinities and operands of the wrong type; random operator chains
without parentheses cover precedence and associativity.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from cel_expr_python import cel
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_discovery.cel_subset import ERROR, Defer, compile_subset
from swarm_discovery.errors import BadRequest
from swarm_discovery.records import INT64_MAX, INT64_MIN
from swarm_discovery.selector import Bindings, compile_selector

_env = cel.NewEnv(variables={"instance": cel.Type.DYN, "node": cel.Type.DYN})
ARITHMETIC = ["+", "-", "*", "/", "%"]
EDGE_INTS = [0, 1, -1, 2, -2, 7, -7, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, 2**32, -(2**31)]
EDGE_DOUBLES = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
INTS = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from(EDGE_INTS)
DOUBLES = st.floats() | st.sampled_from(EDGE_DOUBLES)
NUMBERS = INTS | DOUBLES
OPERANDS = NUMBERS | st.sampled_from(["", "ab", [], [1, "x"], True, None, {"k": 1}])
EXAMPLES = settings(max_examples=300, deadline=None)


def in_cel(source: str, instance: dict[str, Any]) -> Any:
    """CEL's value for `source` as a plain Python value, or the subset's ERROR for its errors."""
    result = _env.compile(source).eval(_env.Activation(data={"instance": instance, "node": {}}))
    return ERROR if result.type() == cel.Type.ERROR else result.plain_value()


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_agrees(source: str, instance: dict[str, Any]) -> None:
    expected, got = in_cel(source, instance), compile_subset(source)(instance, {})
    assert same(got, expected), f"{source} on {instance}: subset gives {got!r}, CEL gives {expected!r}"


def literal(value: int | float) -> str:
    return repr(value)  # CEL reads Python's repr of an int or a finite double as the same number


@pytest.mark.parametrize(
    "source",
    [
        "instance.i + 1",
        "instance.big + 1",
        "instance.min - 1",
        "-instance.min",
        "instance.min / -1",
        "instance.min % -1",
        "instance.min % 1",
        "instance.big * 2",
        "-9223372036854775807 - 1",
        "7 / -2",
        "-7 / 2",
        "-7 % 2",
        "7 % -2",
        "instance.i / 0",
        "instance.i % 0",
        "1.0 / 0.0",
        "-1.0 / 0.0",
        "0.0 / 0.0",
        "1.0 / -0.0",
        "instance.d / instance.nz",
        "instance.nz / 0.0",
        "instance.zd * -1.0",
        "-instance.nz",
        "-instance.zd",
        "1e308 * 10.0",
        "instance.d % instance.d",
        "instance.d % 2",
        "instance.i * 1.5",
        "instance.i * instance.d",
        "1 + instance.d",
        "instance.d + 1",
        "instance.s + 'c'",
        "instance.s + instance.s",
        "instance.s - instance.s",
        "instance.s + 1",
        "[1] + [2.0, 'x']",
        "instance.l + [2, 'x']",
        "instance.l + instance.s",
        "instance.m + instance.m",
        "instance.b + instance.b",
        "instance.i + instance.b",
        "instance.n + 1",
        "instance.missing + 1",
        "-instance.s",
        "2 + 3 * 4",
        "10 - 2 - 3",
        "100 / 10 / 5",
        "1 + 2 * 3 - 4 / 2 % 3",
        "-instance.i * 3",
        "1 - -1",
        "1 -1",
        "true ? 1 : 2 + 3",
        "(true ? 1 : 2) + 3",
        "1 + 1 in [2]",
        "instance.i + 1 == 3",
        "size('a' + 'bc')",
        "size(instance.l + instance.l)",
        "false && instance.missing + 1 > 0",
        "instance.i / 0 > 1 || true",
        "instance.i / 0 > 1 && true",
        "instance.i * 1.5 > 1.0 || instance.d > 1.0",
        "instance.q > 2.0 * instance.c",
        "instance.q > 2 * instance.c",
        "instance.qi > 2 * instance.ci",
    ],
)
def test_each_value_is_cels(source: str) -> None:
    numbers = {"i": 2, "d": 1.5, "big": INT64_MAX, "min": INT64_MIN, "zd": 0.0, "nz": -0.0}
    others = {"s": "ab", "l": [1], "b": True, "n": None, "m": {"k": 1}}
    assert_agrees(source, {**numbers, **others, "q": 17.0, "c": 8.0, "qi": 17, "ci": 8})


@pytest.mark.parametrize("operator", ARITHMETIC)
@given(a=OPERANDS, b=OPERANDS)
@EXAMPLES
def test_operators_over_fields(operator: str, a: Any, b: Any) -> None:
    assert_agrees(f"instance.a {operator} instance.b", {"a": a, "b": b})


@pytest.mark.parametrize("operator", ARITHMETIC)
@given(a=INTS, b=INTS)
@EXAMPLES
def test_operators_over_int_literals(operator: str, a: int, b: int) -> None:
    assert_agrees(f"{literal(a)} {operator} {literal(b)}", {})


@pytest.mark.parametrize("operator", ["+", "-", "*", "/"])
@given(a=DOUBLES.filter(math.isfinite), b=DOUBLES.filter(math.isfinite))
@EXAMPLES
def test_operators_over_double_literals(operator: str, a: float, b: float) -> None:
    assert_agrees(f"{literal(a)} {operator} {literal(b)}", {})


@given(a=OPERANDS)
@EXAMPLES
def test_unary_minus(a: Any) -> None:
    assert_agrees("-instance.a", {"a": a})
    assert_agrees("-(-instance.a)", {"a": a})


def chains(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """`a0 op a1 op ... an`, some operands negated, over fields holding `numbers`."""

    @st.composite
    def chain(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        values = draw(st.lists(numbers, min_size=2, max_size=6))
        source = ""
        for at in range(len(values)):
            if at:
                source += f" {draw(st.sampled_from(ARITHMETIC))} "
            source += f"{'-' if draw(st.booleans()) else ''}instance.v{at}"
        return source, {f"v{at}": value for at, value in enumerate(values)}

    return chain()


SMALL_INTS = st.integers(-50, 50) | st.sampled_from([INT64_MAX, INT64_MIN])


@given(expression=chains(SMALL_INTS) | chains(DOUBLES))
@EXAMPLES
def test_precedence_and_associativity(expression: tuple[str, dict[str, Any]]) -> None:
    source, instance = expression
    assert_agrees(source, instance)


@given(left=chains(SMALL_INTS), right=chains(SMALL_INTS), relation=st.sampled_from(["<", "==", ">="]))
@EXAMPLES
def test_arithmetic_binds_tighter_than_relations_and_logic(
    left: tuple[str, dict[str, Any]], right: tuple[str, dict[str, Any]], relation: str
) -> None:
    """Errors (overflow, division by zero) on one side are absorbed by && and || as in CEL."""
    instance = {**left[1], **{f"w{key[1:]}": value for key, value in right[1].items()}}
    other = right[0].replace("instance.v", "instance.w")
    for source in [
        f"{left[0]} {relation} {other}",
        f"{left[0]} {relation} {other} || instance.v0 > 0",
        f"instance.v0 > 0 && {left[0]} {relation} {other}",
        f"{left[0]} > 0 ? {other} : {left[0]}",
    ]:
        assert_agrees(source, instance)


@pytest.mark.parametrize("source", ["2 * 1.5", "1 + 1.0", "5.5 % 2.0", "instance.d % 1.0", "'a' - 'b'", "true + 1"])
def test_mixed_literals_are_cels_compile_errors(source: str) -> None:
    """CEL's checker refuses these, so no selector reaches the subset with them."""
    with pytest.raises(BadRequest, match="no matching overload"):
        compile_selector(source)


def test_health_rules_run_in_the_subset() -> None:
    for source in [
        "instance.metrics.queue_depth > 2.0 * instance.capacity.max_concurrency",
        "instance.metrics.kv_used / instance.metrics.kv_total > 0.9",
        "node.metrics.gpu_temp_c - 10.0 > instance.metrics.limit",
        "-instance.metrics.x < 0.0",
    ]:
        assert not compile_selector(source).in_cel


def test_ints_beyond_int64_go_to_cel() -> None:
    for source in ["instance.a + instance.b", "instance.a * 1 > 0", "-instance.a < 0"]:
        for a in [2**63, 2**64 - 1, 2**64, -(2**63) - 1]:
            with pytest.raises(Defer):
                compile_subset(source)({"a": a, "b": 1}, {})
            selector, bindings = compile_selector(source), Bindings({"a": a, "b": 1}, {})
            assert selector.matches(bindings) == selector.matches_in_cel(bindings)
