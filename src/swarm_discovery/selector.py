"""Capability selectors: CEL expressions over `instance` and `node`, compiled once and cached.

An expression that fails to compile is a BadRequest that quotes CEL's own pointer to the spot.
An expression that errors on one record (a missing field, a type mismatch) does not match it:
a selector asking for `instance.capabilities.gpu.memory_gb >= 80` simply skips CPU-only instances.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cel_expr_python import cel

from .errors import BadRequest

MAX_SELECTOR_LENGTH = 2048
_CACHE_SIZE = 1024

_env = cel.NewEnv(variables={"instance": cel.Type.DYN, "node": cel.Type.DYN})


class Selector:
    __slots__ = ("_expr", "source")

    def __init__(self, source: str, expr: Any) -> None:
        self.source = source
        self._expr = expr

    def matches(self, activation: Any) -> bool:
        try:
            return self._expr.eval(activation).value() is True
        except RuntimeError:
            return False


def activation(instance: dict[str, Any], node: dict[str, Any]) -> Any:
    """The bindings one record is evaluated against; callers cache it until the record changes."""
    return _env.Activation(data={"instance": instance, "node": node})


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
