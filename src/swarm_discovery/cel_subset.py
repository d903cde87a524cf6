"""The common part of CEL, compiled to one Python function over plain dicts.

cel-expr-python spends 2-4 us per evaluation crossing into C++ and back, whatever the expression:
10,000 instances cost 20-40 ms before anything else. Most selectors and health rules are
comparisons of fields, literals and arithmetic over them, joined by `&&` and `||`. Those are parsed
here and turned into the source of one Python function, with field paths, comparisons and
arithmetic on doubles and int64s written inline; it runs several times faster. Anything outside
that subset (macros such as `exists`, regexes, map literals, conversions such as `double()`,
unsigned or bytes literals, escapes in strings) raises `Unsupported` at compile time, and the
selector evaluates with CEL itself. A record holding a value the subset does not model (an int
outside int64, which CEL sees as a uint or refuses) raises `Defer` and is evaluated by CEL.

Semantics follow cel-expr-python's and are checked against it value by value in
tests/test_selectors.py: heterogeneous equality (`1 == 1.0`, `1 != "1"`), numeric comparisons
across int and double, an error for a missing key or a mismatched type, absorbed by `&&` and
`||` as in CEL (`false && error` is false), and a match only when the result is exactly `true`.
Arithmetic is CEL's too (checked in tests/test_cel_arithmetic.py): int64 with int64 and double
with double only, never mixed (`instance.i * 1.5` is an error); int64 overflow, `x / 0` and `x % 0`
are errors; int division truncates toward zero and `%` takes the dividend's sign; doubles are
IEEE 754 (`1.0 / 0.0` is inf) and have no `%`; `+` also joins strings and lists.
Generated code names only helpers, temporaries and constants from the namespace below; literals
from the expression are passed as constants, never pasted into the source.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

from .records import INT64_MAX, INT64_MIN


class Unsupported(Exception):
    """The expression uses CEL beyond this subset."""


class Defer(Exception):
    """The record holds a value this subset does not model; evaluate it with CEL."""


class _Error:
    """CEL's error value: a missing key, a type mismatch."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERROR"


ERROR: Any = _Error()
Evaluator = Callable[[Any, Any], Any]  # (instance, node) -> value or ERROR

# --- values: the CEL type of a plain Python value, and CEL's rules over them ----------------

BOOL, NUMBER, STRING, NULL, LIST, MAP = range(6)


def _kind(value: Any) -> int:
    kind = type(value)
    if kind is bool:
        return BOOL
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise Defer
        return NUMBER
    if kind is float:
        return NUMBER
    if kind is str:
        return STRING
    if value is None:
        return NULL
    if kind is list:
        return LIST
    if kind is dict:
        return MAP
    raise Defer


def _equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == LIST:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == MAP:
        return len(a) == len(b) and all(k in b and _equal(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _eq(a: Any, b: Any) -> Any:
    return ERROR if a is ERROR or b is ERROR else _equal(a, b)


def _ne(a: Any, b: Any) -> Any:
    return ERROR if a is ERROR or b is ERROR else not _equal(a, b)


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def order(a: Any, b: Any) -> Any:
        if a is ERROR or b is ERROR:
            return ERROR
        kind = _kind(a)
        return compare(a, b) if kind == _kind(b) and kind in (BOOL, NUMBER, STRING) else ERROR

    return order


def _in(item: Any, container: Any) -> Any:
    if item is ERROR or container is ERROR:
        return ERROR
    kind = _kind(container)
    _kind(item)  # raises Defer for a value CEL would see differently
    if kind == LIST:
        return any(_equal(item, element) for element in container)
    if kind == MAP:
        if type(item) is not str:  # records' maps have string keys; leave CEL's rules for others to CEL
            raise Defer
        return item in container
    return ERROR


def _index(container: Any, key: Any) -> Any:
    if container is ERROR or key is ERROR:
        return ERROR
    kind = _kind(container)
    if kind == MAP:
        if type(key) is not str:
            raise Defer
        return container.get(key, ERROR)
    if kind != LIST or _kind(key) != NUMBER or (type(key) is float and not (math.isfinite(key) and key.is_integer())):
        return ERROR
    position = int(key)
    return container[position] if 0 <= position < len(container) else ERROR


def _negate(value: Any) -> Any:
    if value is ERROR or _kind(value) != NUMBER or (value == INT64_MIN and type(value) is int):
        return ERROR
    return -value


def _arithmetic(
    on_ints: Callable[[int, int], int],
    on_doubles: Callable[[float, float], float] | None = None,
    joins: bool = False,
) -> Callable[[Any, Any], Any]:
    """One of CEL's binary arithmetic operators: both operands of one type, as CEL has no mixed
    overloads; `on_ints` raises ZeroDivisionError or OverflowError where CEL reports an error."""

    def apply(a: Any, b: Any) -> Any:
        kind = type(a)
        if kind is not type(b) or a is ERROR:
            return ERROR
        if kind is int:
            if not (INT64_MIN <= a <= INT64_MAX and INT64_MIN <= b <= INT64_MAX):
                raise Defer
            try:
                result = on_ints(a, b)
            except (ZeroDivisionError, OverflowError):
                return ERROR
            return result if INT64_MIN <= result <= INT64_MAX else ERROR
        if kind is float and on_doubles is not None:
            return on_doubles(a, b)
        return a + b if joins and (kind is str or kind is list) else ERROR

    return apply


def _quotient(a: int, b: int) -> int:
    """Truncated toward zero, as in CEL (Python's // floors)."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _remainder(a: int, b: int) -> int:
    """With the dividend's sign, as in CEL."""
    if a == INT64_MIN and b == -1:  # CEL reports the overflow of the quotient here too
        raise OverflowError
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def _double_quotient(a: float, b: float) -> float:
    """IEEE 754 division, which Python refuses by zero."""
    if b:
        return a / b
    if a != a or not a:
        return math.nan
    return math.copysign(math.inf, math.copysign(1.0, a) * math.copysign(1.0, b))


def _size(value: Any) -> Any:
    return len(value) if value is not ERROR and _kind(value) in (STRING, LIST, MAP) else ERROR


def _string_test(test: Callable[[str, str], bool]) -> Callable[[Any, Any], Any]:
    def string_test(value: Any, other: Any) -> Any:
        return test(value, other) if type(value) is str and type(other) is str else ERROR

    return string_test


def _list(*items: Any) -> Any:
    return ERROR if any(item is ERROR for item in items) else list(items)


def _defer() -> bool:
    raise Defer


_HELPERS: dict[str, Any] = {
    "ERROR": ERROR,
    "_eq": _eq,
    "_ne": _ne,
    "_lt": _ordering(operator.lt),
    "_le": _ordering(operator.le),
    "_gt": _ordering(operator.gt),
    "_ge": _ordering(operator.ge),
    "_in": _in,
    "_index": _index,
    "_negate": _negate,
    "_add": _arithmetic(operator.add, operator.add, joins=True),
    "_sub": _arithmetic(operator.sub, operator.sub),
    "_mul": _arithmetic(operator.mul, operator.mul),
    "_div": _arithmetic(_quotient, _double_quotient),
    "_mod": _arithmetic(_remainder),
    "_size": _size,
    "_list": _list,
    "_defer": _defer,
    "INT64_MIN": INT64_MIN,
    "INT64_MAX": INT64_MAX,
    "startsWith": _string_test(str.startswith),
    "endsWith": _string_test(str.endswith),
    "contains": _string_test(str.__contains__),
}
_ORDER_NAMES = {"<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_ARITHMETIC_NAMES = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}
_INT64_PAIR = "INT64_MIN <= {a} <= INT64_MAX and INT64_MIN <= {b} <= INT64_MAX"  # else CEL sees uint or refuses

# --- parsing into a tree of tuples -----------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<double>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
    | (?P<hex>0[xX][0-9a-fA-F]+)(?![uU\w])
    | (?P<int>\d+)(?![uU\w.])
    | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\]{}.,:?+*/%-])
    )""",
    re.VERBOSE,
)
_RELATIONS = ("==", "!=", "<", "<=", ">", ">=", "in")
_FUNCTIONS = {"size": 1}
_METHODS = {"size": 0, "startsWith": 1, "endsWith": 1, "contains": 1}
Node = tuple[Any, ...]


def _tokens(source: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while source[at:].strip():
        match = _TOKEN.match(source, at)
        if match is None:
            raise Unsupported(f"token at {at}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        at = match.end()
    tokens.append(("end", ""))
    return tokens


class _Parser:
    """Recursive descent over CEL's grammar, for the subset."""

    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.at = 0

    def peek(self) -> str:
        return self.tokens[self.at][1]

    def take(self, text: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.at]
        if text is not None and token[1] != text:
            raise Unsupported(f"expected {text!r}")
        self.at += 1
        return token

    def parse(self) -> Node:
        tree = self.conditional()
        if self.tokens[self.at][0] != "end":
            raise Unsupported("trailing input")
        return tree

    def conditional(self) -> Node:
        condition = self.disjunction()
        if self.peek() != "?":
            return condition
        self.take("?")
        then = self.disjunction()
        self.take(":")
        return ("cond", condition, then, self.conditional())

    def disjunction(self) -> Node:
        return self.chain(("||",), "logic", self.conjunction)

    def conjunction(self) -> Node:
        return self.chain(("&&",), "logic", self.relation)

    def relation(self) -> Node:
        return self.chain(_RELATIONS, "rel", self.sum)

    def sum(self) -> Node:
        return self.chain(("+", "-"), "arith", self.product)

    def product(self) -> Node:
        return self.chain(("*", "/", "%"), "arith", self.unary)

    def chain(self, operators: tuple[str, ...], kind: str, operand: Callable[[], Node]) -> Node:
        """Left-associative binary operators of one precedence."""
        left = operand()
        while self.peek() in operators:
            left = (kind, self.take()[1], left, operand())
        return left

    def unary(self) -> Node:
        if self.peek() == "!":
            self.take()
            return ("not", self.unary())
        if self.peek() == "-":
            self.take()
            if self.tokens[self.at][0] in ("int", "hex", "double"):  # a negative literal, as CEL lexes it
                return ("const", self.literal(negative=True))
            return ("neg", self.unary())
        return self.member()

    def member(self) -> Node:
        operand = self.primary()
        while True:
            if self.peek() == ".":
                self.take()
                kind, name = self.take()
                if kind != "ident":
                    raise Unsupported("field name")
                if self.peek() == "(":
                    operand = ("call", name, [operand, *self.arguments(_METHODS.get(name))])
                else:
                    operand = ("select", operand, name)
            elif self.peek() == "[":
                self.take()
                key = self.conditional()
                self.take("]")
                operand = ("index", operand, key)
            else:
                return operand

    def arguments(self, count: int | None) -> list[Node]:
        if count is None:
            raise Unsupported("function")
        found = self.sequence("(", ")")
        if len(found) != count:
            raise Unsupported("arity")
        return found

    def sequence(self, opening: str, closing: str) -> list[Node]:
        self.take(opening)
        found = []
        while self.peek() != closing:
            found.append(self.conditional())
            if self.peek() != closing:
                self.take(",")
        self.take(closing)
        return found

    def primary(self) -> Node:
        kind, text = self.tokens[self.at]
        if kind == "ident":
            self.take()
            if self.peek() == "(":
                if text == "has":
                    return self.presence()
                return ("call", text, self.arguments(_FUNCTIONS.get(text)))
            if text in ("true", "false", "null"):
                return ("const", {"true": True, "false": False, "null": None}[text])
            if text in ("instance", "node"):
                return ("var", text)
            raise Unsupported(f"identifier {text}")
        if text == "(":
            self.take()
            inner = self.conditional()
            self.take(")")
            return inner
        if text == "[":
            return ("list", self.sequence("[", "]"))
        return ("const", self.literal())

    def presence(self) -> Node:
        """has(a.b): whether the map a has the key b."""
        self.take("(")
        operand = self.member()
        self.take(")")
        if operand[0] != "select":
            raise Unsupported("has() takes a field selection")
        return ("has", operand[1], operand[2])

    def literal(self, negative: bool = False) -> Any:
        kind, text = self.take()
        sign = -1 if negative else 1
        if kind in ("int", "hex"):
            value = sign * int(text, 16 if kind == "hex" else 10)
            if not INT64_MIN <= value <= INT64_MAX:
                raise Unsupported("int literal out of range")
            return value
        if kind == "double":
            return sign * float(text)
        if kind == "string" and not negative:
            return text[1:-1]
        raise Unsupported(f"literal {text!r}")


# --- code generation ------------------------------------------------------------------------


class _Writer:
    """Turns the tree into one Python expression; temporaries are walrus-bound locals."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.temporaries = 0

    def temporary(self) -> str:
        self.temporaries += 1
        return f"_t{self.temporaries}"

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def write(self, node: Node) -> str:
        kind = node[0]
        if kind == "const":
            return self.constant(node[1])
        if kind == "var":
            return str(node[1])
        if kind == "select":
            t = self.temporary()
            field = self.constant(node[2])
            return f"({t}.get({field}, ERROR) if type({t} := {self.write(node[1])}) is dict else ERROR)"
        if kind == "has":
            t = self.temporary()
            return f"(({self.constant(node[2])} in {t}) if type({t} := {self.write(node[1])}) is dict else ERROR)"
        if kind == "index":
            return f"_index({self.write(node[1])}, {self.write(node[2])})"
        if kind == "not":
            t = self.temporary()
            return f"((not {t}) if type({t} := {self.write(node[1])}) is bool else ERROR)"
        if kind == "neg":
            return f"_negate({self.write(node[1])})"
        if kind == "logic":
            return self.logic(node[1], node[2], node[3])
        if kind == "arith":
            return self.arithmetic(node[1], node[2], node[3])
        if kind == "cond":
            t = self.temporary()
            then, otherwise = self.write(node[2]), self.write(node[3])
            return f"({then} if ({t} := {self.write(node[1])}) is True else ({otherwise} if {t} is False else ERROR))"
        if kind == "rel":
            return self.relation(node[1], node[2], node[3])
        if kind == "call":
            name, arguments = node[1], [self.write(a) for a in node[2]]
            return f"{'_size' if name == 'size' else name}({', '.join(arguments)})"
        if kind == "list":
            return f"_list({', '.join(self.write(item) for item in node[1])})"
        raise Unsupported(kind)

    def logic(self, operator: str, left: Node, right: Node) -> str:
        """CEL's && and ||: the deciding value wins wherever it is; otherwise an error is an error."""
        a, b = self.temporary(), self.temporary()
        decides, other = ("False", "True") if operator == "&&" else ("True", "False")
        return (
            f"({decides} if ({a} := {self.write(left)}) is {decides} else "
            f"({decides} if ({b} := {self.write(right)}) is {decides} else "
            f"({other} if {a} is {other} and {b} is {other} else ERROR)))"
        )

    def relation(self, operator: str, left: Node, right: Node) -> str:
        literal = right[1] if right[0] == "const" else None
        t = self.temporary()
        if operator in _ORDER_NAMES and type(literal) in (int, float):  # the usual `field >= 80`
            number = self.constant(literal)
            return (
                f"(({t} {operator} {number}) if type({t} := {self.write(left)}) is float "
                f"or type({t}) is int and (INT64_MIN <= {t} <= INT64_MAX or _defer()) else ERROR)"
            )
        if operator in _ORDER_NAMES and type(literal) is str:
            text = self.constant(literal)
            return f"(({t} {operator} {text}) if type({t} := {self.write(left)}) is str else ERROR)"
        if operator in ("==", "!=") and type(literal) is str:  # `field == "H100"`
            text, slow = self.constant(literal), "_eq" if operator == "==" else "_ne"
            return f"(({t} {operator} {text}) if type({t} := {self.write(left)}) is str else {slow}({t}, {text}))"
        if operator == "in" and left[0] == "const" and type(left[1]) is str:  # `"vllm" in instance.tags`
            text = self.constant(left[1])
            # Plain JSON values equal a string only when they are that string, as in CEL.
            return f"(({text} in {t}) if type({t} := {self.write(right)}) is list else _in({text}, {t}))"
        helper = {"==": "_eq", "!=": "_ne", "in": "_in"}.get(operator) or _ORDER_NAMES[operator]
        if operator == "in":
            return f"{helper}({self.write(left)}, {self.write(right)})"
        a, b, kind = self.temporary(), self.temporary(), self.temporary()
        return (  # inline where both are doubles or both int64s, as health rules over metrics are
            f"(({a} {operator} {b}) if ({kind} := type({a} := {self.write(left)})) is type({b} := {self.write(right)}) "
            f"and ({kind} is float or {kind} is int and {_INT64_PAIR.format(a=a, b=b)}) else {helper}({a}, {b}))"
        )

    def arithmetic(self, operator: str, left: Node, right: Node) -> str:
        """Inline where both are doubles or both int64s with an int64 result; the helper decides
        every other case, and those Python would answer differently (int `/`, division by zero)."""
        helper = _ARITHMETIC_NAMES[operator]
        if operator == "%":  # no double overload, and Python's % is not CEL's
            return f"{helper}({self.write(left)}, {self.write(right)})"
        a, b = self.temporary(), self.temporary()
        both = f"type({a} := {self.write(left)}) is type({b} := {self.write(right)})"
        doubles = f"({a} {operator} {b}) if {both} is float"
        if operator == "/":
            return f"({doubles} and {b} else {helper}({a}, {b}))"
        r = self.temporary()
        ints = f"type({a}) is type({b}) is int and {_INT64_PAIR.format(a=a, b=b)}"
        return (
            f"({doubles} else ({r} if {ints} and INT64_MIN <= ({r} := {a} {operator} {b}) <= INT64_MAX "
            f"else {helper}({a}, {b})))"
        )


def compile_subset(source: str) -> Evaluator:
    """One function for `source`, already known to be valid CEL; `Unsupported` if beyond the subset."""
    writer = _Writer()
    try:
        body = writer.write(_Parser(source).parse())
        code = compile(f"def _selector(instance, node):\n    return {body}\n", "<selector>", "exec")
    except (RecursionError, SyntaxError, MemoryError):  # nesting deeper than Python's parser takes
        raise Unsupported("too deeply nested") from None
    namespace = {**_HELPERS, **writer.constants}
    exec(code, namespace)  # our own source; the expression's literals are passed as constants
    return namespace["_selector"]  # type: ignore[no-any-return]
