"""Capability selectors: CEL expressions over `instance` and `node`, compiled once and cached.

An expression that fails to compile is a BadRequest that quotes CEL's own pointer to the spot.
An expression that errors on one record (a missing field, a type mismatch) does not match it:
a selector asking for `instance.capabilities.gpu.memory_gb >= 80` simply skips CPU-only instances.
Errors that are the expression's own fault, whatever the record (an invalid regular expression,
more than CEL's 10,000 iterations in one evaluation), are a BadRequest: they would otherwise
quietly match nothing.
Selectors within the common subset of CEL run as generated Python (see `cel_subset`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cel_expr_python import cel

from .cel_subset import Defer, Evaluator, Unsupported, compile_subset
from .errors import BadRequest

MAX_SELECTOR_LENGTH = 2048
_CACHE_SIZE = 1024
_ERROR = cel.Type.ERROR
_BOOL = cel.Type.BOOL
_SELECTORS_FAULT = {  # CEL's runtime errors that no record can cause or avoid
    "Iteration budget exceeded": "more than CEL's 10,000 iterations in one evaluation; it is too costly",
    "invalid regular expression": "an invalid regular expression",
}

_env = cel.NewEnv(variables={"instance": cel.Type.DYN, "node": cel.Type.DYN})


class Bindings:
    """What one record is evaluated against: its plain dicts, and CEL's activation when first needed.

    Callers keep it until the record changes.
    """

    __slots__ = ("_activation", "instance", "node")

    def __init__(self, instance: dict[str, Any], node: dict[str, Any]) -> None:
        self.instance = instance
        self.node = node
        self._activation: Any = None

    @property
    def activation(self) -> Any:
        if self._activation is None:
            self._activation = _env.Activation(data={"instance": self.instance, "node": self.node})
        return self._activation


class Selector:
    """A compiled selector: generated Python where the subset covers it, CEL itself elsewhere."""

    __slots__ = ("_expr", "_fast", "source")

    def __init__(self, source: str, expr: Any) -> None:
        self.source = source
        self._expr = expr
        try:
            self._fast: Evaluator | None = compile_subset(source)
        except Unsupported:
            self._fast = None

    @property
    def in_cel(self) -> bool:
        """Whether CEL itself evaluates it: then one record's evaluation may take long (up to its
        10,000 iterations over the longest strings a record holds)."""
        return self._fast is None

    def matches(self, bindings: Bindings) -> bool:
        if self._fast is not None:
            try:
                return self._fast(bindings.instance, bindings.node) is True
            except Defer:
                pass
        return self.matches_in_cel(bindings)

    def matches_in_cel(self, bindings: Bindings) -> bool:
        try:
            result = self._expr.eval(bindings.activation)
        except RuntimeError as exc:  # how CEL reports running out of its iteration budget
            _raise_if_the_selectors_fault(str(exc))
            return False
        if result.type() == _ERROR:  # how it reports most other errors: as the value
            _raise_if_the_selectors_fault(str(result.value()))
            return False
        return result.value() is True

    def fault_on(self, bindings: Bindings) -> str | None:
        """What is wrong when CEL itself evaluates this on `bindings`: its error, or that the answer
        is not true or false; None when it is."""
        try:
            result = self._expr.eval(bindings.activation)
        except RuntimeError as exc:
            return str(exc)
        if result.type() == _ERROR:
            return str(result.value())
        return None if result.type() == _BOOL else f"gives a {str(result.type()).lower()}, not true or false"


def _raise_if_the_selectors_fault(message: str) -> None:
    for known, meaning in _SELECTORS_FAULT.items():
        if known in message:
            raise BadRequest(f"selector: {meaning}")


_compiled: OrderedDict[str, Selector] = OrderedDict()


def compile_selector(source: str, field: str = "selector") -> Selector:
    selector = _compiled.get(source)
    if selector is not None:
        _compiled.move_to_end(source)
        return selector
    if len(source) > MAX_SELECTOR_LENGTH:
        raise BadRequest(f"{field}: longer than {MAX_SELECTOR_LENGTH} characters")
    try:
        expr = _env.compile(source)
    except RuntimeError as exc:
        message = str(exc).removeprefix("INVALID_ARGUMENT: ").removesuffix(" [INVALID_ARGUMENT]")
        raise BadRequest(f"{field}: {message}") from None
    selector = Selector(source, expr)
    _compiled[source] = selector
    if len(_compiled) > _CACHE_SIZE:
        _compiled.popitem(last=False)
    return selector
