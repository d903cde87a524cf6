"""Routes: how the gateway sends each service's traffic, from flags and an optional routes file.

A routes file is TOML (or JSON, by a `.json` name). Its top-level keys are defaults for every route,
laid over the flags; `[services.NAME]` sections set one service's route; `[models]` sets the route
of the OpenAI-style paths at the root:

    strategy = "least_loaded"   # defaults for every route
    timeout = "30s"

    [services.web]              # /web/... and Host: web.swarm
    strategy = "round_robin"
    tags = ["v2"]

    [models]                    # /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models
    services = ["llm"]          # where to look for instances serving a model (default: every service)
    strategy = "ai_aware"
    scrape = "/metrics"         # read vLLM-style metrics from each server
    [models.ai]                 # the AI-aware picker's weights and thresholds
    prefix_weight = 3.0

Durations are written like `500ms` or `30s` (or a number of seconds), sizes in bytes or like `8MiB`.
A mistake is a `RoutesError` naming the file and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..balance import STRATEGIES, AiSettings
from ..durations import parse_duration
from ..errors import BadRequest, SwarmError
from ..records import ID_PATTERN

Positive = Annotated[float, msgspec.Meta(gt=0)]
SERVICE_NAME = re.compile(ID_PATTERN)
DURATIONS = frozenset({"connect_timeout", "timeout", "idle_timeout", "scrape_every", "queue_timeout"})
SIZES = frozenset({"body_limit"})
_SIZE = re.compile(r"^(\d+)\s*(|B|KB|KiB|MB|MiB|GB|GiB)$")
_UNITS = {"": 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 1024**2, "GB": 10**9, "GiB": 1024**3}


class RoutesError(SwarmError):
    """The routes file or a flag is wrong; the message names it and the field."""


class Route(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How one service's requests (or the model paths') are balanced, retried and limited."""

    strategy: str = "least_loaded"
    selector: str | None = None  # CEL over instance and node, as the registry evaluates it
    tags: tuple[str, ...] = ()  # instances must have every one
    zone: str | None = None  # locality tiers: this zone, then this region, then anywhere
    region: str | None = None
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    connect_timeout: Positive = 2.0
    timeout: Positive = 60.0  # per try: until the answer's head arrives
    idle_timeout: Positive = 300.0  # between two parts of an answer's body
    body_limit: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)] = 8 << 20
    # What is retried elsewhere after it was sent: only idempotent methods, or every request
    # (the model paths' default: inference has no side effects). What never reached an instance
    # is always retried.
    retry: Literal["idempotent", "all"] = "idempotent"
    # the model paths only
    services: tuple[str, ...] | None = None
    scrape: str | None = None  # a path serving Prometheus metrics on each server (vLLM's /metrics)
    scrape_every: Positive = 0.1
    queue_timeout: Annotated[float, msgspec.Meta(ge=0)] = 1.0  # how long a request waits when all are saturated
    max_queued: Annotated[int, msgspec.Meta(ge=0)] = 256
    ai: AiSettings = AiSettings()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.scrape is not None and not self.scrape.startswith("/"):
            raise ValueError(f"scrape: a path starting with /, not {self.scrape!r}")
        for name in self.services or ():
            if not SERVICE_NAME.match(name):
                raise ValueError(f"services: {name!r} is not a service name")

    @property
    def watch_selector(self) -> str | None:
        """The selector to follow the service with: the route's own, and its tags, as CEL."""
        parts = [f"{json.dumps(tag)} in instance.tags" for tag in self.tags]
        if self.selector:
            parts.append(f"({self.selector})")
        return " && ".join(parts) or None


MODEL_DEFAULTS = {"strategy": "ai_aware", "retry": "all"}


class Routes(msgspec.Struct, frozen=True):
    """Every route: the defaults, the services named, and the model paths'."""

    defaults: Route = Route()
    services: dict[str, Route] = {}
    models: Route = Route(**MODEL_DEFAULTS)  # type: ignore[arg-type]

    def for_service(self, service: str) -> Route:
        return self.services.get(service, self.defaults)


def size(value: Any, field: str) -> int:
    """Bytes in `value`: a number, or text like 8MiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise RoutesError(f"{field}: {value!r} is not a size (write it like 65536, 64KiB or 8MiB)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def seconds(value: Any, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise RoutesError(f"{field}: {value!r} is not a duration (write it like 500ms, 10s or 2m)")
    try:
        return parse_duration(value, field)
    except BadRequest as exc:
        raise RoutesError(exc.message) from None


def route(fields: dict[str, Any], where: str) -> Route:
    """A Route from plain values (durations and sizes as text or numbers); `where` prefixes errors."""
    given = dict(fields)
    for key in DURATIONS & given.keys():
        given[key] = seconds(given[key], f"{where}{key}")
    for key in SIZES & given.keys():
        given[key] = size(given[key], f"{where}{key}")
    try:
        return msgspec.convert(given, Route)
    except msgspec.ValidationError as exc:
        raise RoutesError(f"{where}{_field_error(str(exc))}") from None


def _field_error(message: str) -> str:
    """msgspec's `Expected int, got str - at $.attempts` as `attempts: expected int, got str`."""
    unknown = re.match(r"Object contains unknown field `([^`]*)`(?: - at `\$\.?([^`]*)`)?$", message)
    if unknown is not None:
        within = f"{unknown.group(2)}." if unknown.group(2) else ""
        return f"{within}{unknown.group(1)}: unknown field"
    what, _, at = message.rpartition(" - at `$")
    if not what:
        return message
    what = what.replace("`", "")
    path = at.rstrip("`").lstrip(".")
    return f"{path}: {what[0].lower()}{what[1:]}" if path else what


def load_routes(path: Path | None, flags: dict[str, Any], model_flags: dict[str, Any] | None = None) -> Routes:
    """The routes from the flags given (`None` values left out) and the file, which wins over them.

    `model_flags` are the model paths' own (their strategy); the file's top level sets every route
    but the model paths' strategy and retry, which only `[models]` changes.
    """
    base = {key: value for key, value in flags.items() if value is not None}
    for_models = {**MODEL_DEFAULTS, **{k: v for k, v in (model_flags or {}).items() if v is not None}}
    if path is None:
        return Routes(defaults=route(base, ""), models=route({**base, **for_models}, "models."))
    name = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RoutesError(f"--routes: cannot read {name}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise RoutesError(f"{name}: {exc}") from None
    if not isinstance(data, dict):
        raise RoutesError(f"{name}: expected a table (a JSON object) at the top")
    services = data.pop("services", {})
    models = data.pop("models", {})
    for key, value in (("services", services), ("models", models)):
        if not isinstance(value, dict):
            raise RoutesError(f"{name}: {key}: expected a table")
    common = {**base, **data}
    defaults = route(common, f"{name}: ")
    named = {}
    for service, fields in services.items():
        if not SERVICE_NAME.match(service):
            raise RoutesError(f"{name}: services: {service!r} is not a service name")
        if not isinstance(fields, dict):
            raise RoutesError(f"{name}: services.{service}: expected a table")
        named[service] = route({**common, **fields}, f"{name}: services.{service}.")
    model_route = route({**common, **for_models, **models}, f"{name}: models.")
    return Routes(defaults=defaults, services=named, models=model_route)
