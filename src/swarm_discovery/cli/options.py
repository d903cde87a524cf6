"""Options several commands share, and turning what was typed into request fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..certs import CertificateFileError
from ..durations import parse_duration
from ..errors import BadRequest
from ..sdk.client import Client
from .output import fail

Addr = Annotated[
    str | None,
    typer.Option(
        "--addr",
        envvar="SWARM_ADDR",
        metavar="HOST:PORT",
        help="The server, or several, comma-separated, tried in turn; https://HOST:PORT for TLS, verified "
        "with SWARM_CACERT (a CA bundle), with SWARM_CLIENT_CERT and SWARM_CLIENT_KEY as the client "
        "certificate if it asks for one.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON, with every field, instead of text.")]
Service = Annotated[
    str, typer.Argument(metavar="SERVICE", help="Service name, e.g. llm-inference.", show_default=False)
]
InstanceId = Annotated[str, typer.Argument(metavar="ID", help="Instance id.", show_default=False)]
Checks = Annotated[
    list[str] | None,
    typer.Option(
        "--check",
        metavar="URL",
        help="An active check: http(s)://HOST:PORT/PATH, tcp://HOST:PORT or grpc://HOST:PORT "
        "(grpc://HOST:PORT/SERVICE for one gRPC service). Repeatable.",
    ),
]
CheckInterval = Annotated[str, typer.Option(metavar="DURATION", help="How often the --check probes run.")]
CheckTimeout = Annotated[str, typer.Option(metavar="DURATION", help="How long a --check probe may take.")]
Region = Annotated[str | None, typer.Option(metavar="NAME", help="Region, e.g. eu-west.")]
Zone = Annotated[str | None, typer.Option(metavar="NAME", help="Zone, e.g. eu-west-1a.")]


def connect(addr: str | None) -> Client:
    """A client for `addr` (else SWARM_ADDR), with TLS from SWARM_CACERT, SWARM_CLIENT_CERT and SWARM_CLIENT_KEY."""
    try:
        return Client(addr)
    except CertificateFileError as exc:
        fail(str(exc))


def body_from(file: Path | None, option: str = "--file") -> dict[str, Any]:
    """The JSON object in the file `option` names, or an empty one; options given beside it are laid over it."""
    if file is None:
        return {}
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{option}: cannot read {file}: {exc}")
    if not isinstance(body, dict):
        fail(f"{option}: {file} holds no JSON object")
    return body


Metrics = Annotated[
    list[str] | None, typer.Option("--metric", metavar="NAME=NUMBER", help="A metric, e.g. queue_depth=3. Repeatable.")
]


def metrics_of(values: list[str] | None) -> dict[str, float] | None:
    """What the --metric options say, None without any."""
    return {name: number(value, "--metric") for name, value in pairs(values, "--metric")} or None


def pairs(values: list[str] | None, option: str) -> list[tuple[str, str]]:
    """`k=v` strings as pairs; anything else fails naming `option`."""
    found = []
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option}: expected key=value, got {item!r}")
        found.append((key, value))
    return found


def scalar(text: str) -> Any:
    """`80` is a number, `true` a bool, `["a"]` a list; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        fail(f"{option}: expected a number, got {text!r}")


def seconds(text: str, option: str) -> float:
    try:
        return parse_duration(text, option)
    except BadRequest as exc:
        fail(exc.message)


def check_specs(targets: list[str] | None, interval: str, timeout: str) -> list[dict[str, str]]:
    """What each --check says, as a check spec."""
    specs = []
    for target in targets or []:
        scheme, sep, rest = target.partition("://")
        if scheme in ("http", "https"):
            spec = {"type": "http", "url": target}
        elif sep and scheme in ("tcp", "grpc"):
            spec = {"type": scheme, scheme: rest}
        else:
            fail(f"--check: expected http(s)://..., tcp://host:port or grpc://host:port[/service], got {target!r}")
        specs.append({**spec, "interval": interval, "timeout": timeout})
    return specs


def location(region: str | None, zone: str | None) -> dict[str, str]:
    return {k: v for k, v in {"region": region, "zone": zone}.items() if v}
