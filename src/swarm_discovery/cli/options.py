"""Options several commands share, and turning what was typed into request fields."""

from __future__ import annotations

import json
import math
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
Capacity = Annotated[
    list[str] | None,
    typer.Option(metavar="NAME=NUMBER", help="What it can take, e.g. max_concurrency=16. Repeatable."),
]


def numbers(values: list[str] | None, option: str = "--metric") -> dict[str, float] | None:
    """What NAME=NUMBER options (--metric, --capacity) say, None without any."""
    return {name: number(value, option) for name, value in pairs(values, option)} or None


def pairs(values: list[str] | None, option: str) -> list[tuple[str, str]]:
    """`k=v` strings as pairs; anything else fails naming `option`."""
    found = []
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option}: expected key=value, got {item!r}")
        found.append((key, value))
    return found


def part(body: dict[str, Any], field: str, empty: dict[str, Any] | list[Any]) -> Any:
    """`body[field]`, for options to add to: `empty` where --file left it out or null."""
    if body.get(field) is None:
        body[field] = empty
    elif type(body[field]) is not type(empty):
        fail(f"--file: {field} must be {'an object' if isinstance(empty, dict) else 'a list'}")
    return body[field]


def nested(values: list[str] | None, option: str, into: dict[str, Any]) -> None:
    """`a.b=80` pairs into `into` as {"a": {"b": 80}}, over what it held there. One pair that
    names a value and another that names a group inside it fail, as does an empty name."""
    given: dict[tuple[str, ...], str] = {}
    for path, value in pairs(values, option):
        parts = tuple(path.split("."))
        if "" in parts:
            fail(f"{option} {path}={value}: a name between dots is empty")
        for other in given:
            shorter = min(other, parts, key=len)
            if other[: len(shorter)] == parts[: len(shorter)]:
                what = "twice" if other == parts else "as a value and as a group of values"
                fail(f"{option} {path}={value}: {'.'.join(shorter)} is given {what}")
        given[parts] = value
        target = into
        for name in parts[:-1]:
            if not isinstance(target.get(name), dict):
                target[name] = {}
            target = target[name]
        target[parts[-1]] = scalar(value, f"{option} {path}")


def scalar(text: str, option: str) -> Any:
    """`80` is a number, `true` a bool, `["a"]` a list; anything else stays a string."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text
    return finite(value, text, option) if isinstance(value, float) else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: json takes them, nothing else does


def number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        fail(f"{option}: expected a number, got {text!r}")
    return finite(value, text, option)


def finite(value: float, text: str, option: str) -> float:
    """`value`, unless NaN or infinite (`nan`, `1e400`): JSON has neither, it would arrive as null."""
    if not math.isfinite(value):
        fail(f"{option}: expected a finite number, got {text!r}")
    return value


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
