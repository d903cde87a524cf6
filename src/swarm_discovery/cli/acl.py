"""`swarm acl`: bootstrap access control, and create, list and delete tokens.

The server is the one SWARM_ADDR names, and these commands present the token in SWARM_TOKEN
(a management token, or one with operator rights), as every command does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .options import Addr, Json, body_from, connect
from .output import call, console, errors, print_json
from .tables import tokens_table

TokenId = Annotated[str, typer.Argument(metavar="ID", help="The token's accessor id.", show_default=False)]


def bootstrap(addr: Addr = None, as_json: Json = False) -> None:
    """Create the first management token (once per cluster): keep its secret safe."""
    with connect(addr) as client:
        created = call(client.bootstrap)
    if as_json:
        print_json(created)
        return
    console.print(f"id:    {created.id}\ntoken: {created.token}", highlight=False)
    errors.print("The token is shown only now. Use it as SWARM_TOKEN to create the others.", style="dim")


def create(
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            metavar="FILE",
            help='JSON rules, e.g. {"services": {"acme-": "write"}, "nodes": {"acme-": "write"}, '
            '"reports": {"acme-": "write"}}; longest prefix wins, "" matches all.',
        ),
    ] = None,
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the token is for.")] = "",
    identity: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="A client certificate's SAN or CN that acts as this token. Repeatable."),
    ] = None,
    addr: Addr = None,
    as_json: Json = False,
) -> None:
    """Create a token with rules; its secret is shown once."""
    with connect(addr) as client:
        created = call(client.create_token, body_from(rules, "--rules"), description, identity)
    if as_json:
        print_json(created)
    else:
        console.print(f"id:    {created.id}\ntoken: {created.token}", highlight=False)


def tokens(addr: Addr = None, as_json: Json = False) -> None:
    """Every token, with its rules (never its secret)."""
    with connect(addr) as client:
        found = call(client.tokens)
    if as_json:
        print_json(found)
    else:
        console.print(tokens_table(found, console.width))


def delete(id: TokenId, addr: Addr = None) -> None:
    """Delete a token: its secret stops working at once."""
    with connect(addr) as client:
        call(client.delete_token, id)
    console.print(f"deleted token {escape(id)}")


def own(addr: Addr = None, as_json: Json = False) -> None:
    """The token SWARM_TOKEN holds: its id and rules."""
    with connect(addr) as client:
        own = call(client.own_token)
    if as_json:
        print_json(own)
    else:
        console.print(tokens_table([own], console.width))
