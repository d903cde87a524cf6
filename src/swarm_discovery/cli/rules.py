"""Service-wide metric rules: `swarm rules set|show|clear SERVICE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .options import Addr, Json, Service, connect
from .output import answer, call, console, fail, print_json
from .tables import rules_table


def _rules_from(file: Path) -> list[Any]:
    """A JSON list of metric checks, or an object with `rules` holding one."""
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        fail(f"--file: cannot read {file}: {exc}")
    rules = body.get("rules") if isinstance(body, dict) else body
    if not isinstance(rules, list):
        fail(f"--file: {file} holds neither a list of rules nor an object with `rules`")
    return rules


def set_rules(
    service: Service,
    critical: Annotated[
        str | None, typer.Option(metavar="CEL", help="e.g. 'instance.metrics.gpu_temp_c > 92.0'.")
    ] = None,
    warning: Annotated[
        str | None, typer.Option(metavar="CEL", help="e.g. 'instance.metrics.queue_depth > 100.0'.")
    ] = None,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="The rule's check name.")] = None,
    max_age: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Metrics older than this make the rule warning.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("-f", "--file", metavar="FILE", help="A JSON list of metric checks.")
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Set the metric rules every instance of SERVICE takes, now and when registered later.

    One rule from the options, or several from --file; either replaces the rules the service had.
    Metrics are doubles: write 2.0, not 2, beside them.
    """
    if file is not None and (critical or warning or name or max_age):
        fail("give --file, or --critical/--warning with --name and --max-age, not both")
    if file is not None:
        rules = _rules_from(file)
    elif critical or warning:
        given = {"name": name, "critical": critical, "warning": warning, "max_age": max_age}
        rules = [{"type": "metric", **{k: v for k, v in given.items() if v is not None}}]
    else:
        fail("give --critical and/or --warning, or --file")
    with connect(addr) as client:
        found = call(client.set_rules, service, rules)
    answer(found, as_json, f"set {len(found.rules)} rule(s) on [bold]{escape(service)}[/bold]")


def show_rules(service: Service, addr: Addr = None, as_json: Json = False) -> None:
    """The metric rules every instance of SERVICE takes."""
    with connect(addr) as client:
        found = call(client.rules, service)
    if as_json:
        print_json(found)
    elif not found.rules:
        console.print(f"[bold]{escape(service)}[/bold] has no rules")
    else:
        console.print(rules_table(found.rules, console.width))


def clear_rules(service: Service, addr: Addr = None, as_json: Json = False) -> None:
    """Clear the metric rules of SERVICE; its instances keep their own checks."""
    with connect(addr) as client:
        call(client.clear_rules, service)
    answer({"service": service, "deleted": True}, as_json, f"cleared the rules of [bold]{escape(service)}[/bold]")
