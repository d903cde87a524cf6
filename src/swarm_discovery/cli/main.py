"""`swarm`: run the server and talk to it. SWARM_ADDR picks the server (default 127.0.0.1:8500).

Each module holds the commands of one concern (serve, instances, nodes, watch, catalog); this
one puts them together, in the order `--help` lists them.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer._click import Context, Parameter
from typer.core import TyperCommand, TyperGroup, TyperOption

from . import acl, catalog, gateway, instances, nodes, rules, serve, watch
from .output import show_sdk_news


class _FlagsAsFlags:
    """`--all`, not `--all <bool>`: this typer writes a value's type after every option, flags too."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params: list[Parameter] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsAsFlags, TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            # A docstring's lines end where its source does: rich keeps those breaks, so each
            # paragraph becomes one line for rich to wrap at the terminal's width.
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(paragraph.split("\n")) for paragraph in paragraphs)


class _Group(_FlagsAsFlags, TyperGroup):
    pass


def _app(**options: Any) -> typer.Typer:
    return typer.Typer(cls=_Group, rich_markup_mode="rich", pretty_exceptions_enable=False, **options)


app = _app(
    help="Swarm Service Discovery: register GPU, storage and inference services; find them by capability.",
    no_args_is_help=True,
)
node_app = _app(help="Register and remove nodes: the machines instances run on.", no_args_is_help=True)


@app.callback()
def _setup() -> None:
    show_sdk_news()


for command in (
    serve.serve,
    instances.register,
    instances.deregister,
    instances.heartbeat,
    instances.maintenance,
    catalog.services,
    instances.instances,
    instances.checks,
    watch.watch,
    nodes.nodes,
    gateway.gateway,
):
    app.command(cls=_Command)(command)
node_app.command("register", cls=_Command)(nodes.register_node)
node_app.command("heartbeat", cls=_Command)(nodes.node_heartbeat)
node_app.command("remove", cls=_Command)(nodes.remove_node)
app.add_typer(node_app, name="node")
acl_app = _app(help="Access control (swarm serve --acl): bootstrap, and tokens with rules.", no_args_is_help=True)
token_app = _app(help="Create, list and delete tokens.", no_args_is_help=True)
acl_app.command("bootstrap", cls=_Command)(acl.bootstrap)
token_app.command("create", cls=_Command)(acl.create)
token_app.command("list", cls=_Command)(acl.tokens)
token_app.command("delete", cls=_Command)(acl.delete)
token_app.command("self", cls=_Command)(acl.own)
acl_app.add_typer(token_app, name="token")
app.add_typer(acl_app, name="acl")
rules_app = _app(help="Metric rules every instance of a service takes: set, show, clear.", no_args_is_help=True)
rules_app.command("set", cls=_Command)(rules.set_rules)
rules_app.command("show", cls=_Command)(rules.show_rules)
rules_app.command("clear", cls=_Command)(rules.clear_rules)
app.add_typer(rules_app, name="rules")
app.command(cls=_Command)(catalog.info)
