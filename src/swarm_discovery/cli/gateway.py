"""`swarm gateway`: the reverse proxy in front of the registry's services; each mistake one line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .options import Addr
from .output import fail
from .serve import LogLevel, _address

_FLAGS = {"models.strategy": "--model-strategy", "models.scrape": "--scrape", "tags": "--tag"}


def _flag_error(message: str) -> str:
    """A field's error (`connect_timeout: ...`) as the flag's (`--connect-timeout: ...`)."""
    field, sep, rest = message.partition(": ")
    return f"{_FLAGS.get(field, '--' + field.replace('_', '-'))}{sep}{rest}"


def gateway(
    listen: Annotated[str, typer.Option(metavar="HOST:PORT", help="Where to serve HTTP.")] = "127.0.0.1:8080",
    routes: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Routes, TOML (or JSON): defaults, then \\[services.NAME] and \\[models] sections."
        ),
    ] = None,
    addr: Addr = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="round_robin, weighted, least_loaded (the default), consistent_hash (key: X-Swarm-Key) or ai_aware.",
            show_default=False,
        ),
    ] = None,
    selector: Annotated[
        str | None, typer.Option(metavar="CEL", help="Only instances that match.", show_default=False)
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(metavar="TAG", help="Only instances with this tag. Repeatable.")
    ] = None,
    zone: Annotated[str | None, typer.Option(metavar="NAME", help="Prefer this zone, then its region.")] = None,
    region: Annotated[str | None, typer.Option(metavar="NAME", help="Prefer this region.")] = None,
    attempts: Annotated[
        int | None, typer.Option(metavar="N", help="Tries per request, on different instances (default 3).")
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Per try, until the answer begins (default 60s).", show_default=False),
    ] = None,
    connect_timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Per connection (default 2s).", show_default=False)
    ] = None,
    body_limit: Annotated[
        str | None, typer.Option(metavar="SIZE", help="Largest request body (default 8MiB).", show_default=False)
    ] = None,
    model_strategy: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="For the OpenAI-style paths (default ai_aware).", show_default=False),
    ] = None,
    scrape: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Read model servers' vLLM-style metrics at this path (e.g. /metrics).",
            show_default=False,
        ),
    ] = None,
    max_services: Annotated[int, typer.Option(metavar="N", help="Services followed at once.")] = 512,
    max_in_flight: Annotated[int, typer.Option(metavar="N", help="Requests at once (503 past it).")] = 4096,
    log_level: Annotated[LogLevel, typer.Option(metavar="LEVEL", help="debug, info, warning or error.")] = (
        LogLevel.warning
    ),
) -> None:
    """Balance and fail over any HTTP client's requests across the registry's instances.

    /SERVICE/PATH and Host: SERVICE.swarm go to an instance of SERVICE; POST /v1/chat/completions,
    /v1/completions and /v1/embeddings go by the body's model to an instance listing it in
    capabilities.models; GET /v1/models lists what is served. /metrics and /-/status show the
    gateway. Flags set every route's defaults; a --routes file's settings are laid over them.
    """
    from ..gateway.serve import serve
    from ..gateway.settings import RoutesError, load_routes
    from ..server import CannotServe

    host, port = _address(listen, "--listen")
    if max_services < 1 or max_in_flight < 1:
        fail("--max-services and --max-in-flight: must be positive")
    flags = {
        "strategy": strategy,
        "selector": selector,
        "tags": tag or None,
        "zone": zone,
        "region": region,
        "attempts": attempts,
        "timeout": timeout,
        "connect_timeout": connect_timeout,
        "body_limit": body_limit,
    }
    try:
        found = load_routes(routes, flags, {"strategy": model_strategy, "scrape": scrape})
    except RoutesError as exc:
        fail(exc.message if routes is not None else _flag_error(exc.message))
    logging.basicConfig(level=log_level.value.upper(), format="swarm gateway: %(message)s")
    try:
        serve(host, port, found, addr, max_services=max_services, max_in_flight=max_in_flight)
    except CannotServe as exc:
        fail(exc.message)
