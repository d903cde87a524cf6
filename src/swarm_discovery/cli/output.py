"""What every command prints with: the consoles, one-line errors, JSON with every field."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..errors import ApiError

console = Console()
errors = Console(stderr=True)
P = ParamSpec("P")
T = TypeVar("T")
STATUS_STYLE = {"passing": "green", "warning": "yellow", "critical": "red", "maintenance": "blue"}


def fail(message: str) -> NoReturn:
    """Print one line on stderr and exit 1."""
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)`; an error answer printed in one line and the command failed."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(str(exc))


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def filled(value: Any) -> Any:
    """`value` as plain JSON values, with every field a record has, defaults too.

    The records leave defaulted fields out on the wire (`omit_defaults`); a script reading the
    CLI's JSON should find `kind`, `weight` or a zero counter whatever it was set to, and
    `node` or `maintenance` as null when there is none.
    """
    if isinstance(value, msgspec.Struct):
        return {name: filled(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [filled(item) for item in value]
    if isinstance(value, dict):
        return {key: filled(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(filled(value)).decode() + "\n")
    sys.stdout.flush()


def answer(value: Any, as_json: bool, line: str) -> None:
    """A command's answer: `value` as JSON with --json, else one line of text (rich markup)."""
    if as_json:
        print_json(value)
    else:
        console.print(line)


class _ToStderr(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        errors.print(f"swarm: {escape(record.getMessage())}", soft_wrap=True, style="dim")


def show_sdk_news() -> None:
    """Print what the SDK logs (a lost server, a failing heartbeat, reconnecting) as lines on stderr."""
    sdk = logging.getLogger("swarm.sdk")
    sdk.addHandler(_ToStderr())
    sdk.setLevel(logging.INFO)
    sdk.propagate = False
