"""The records: what users send (specs) and what the server shows (views).

Limits are part of the contract and documented in the README: every one is enforced here, at the
edge, so that nothing past this module sees an invalid record. What users send is decoded with
`decoding.Decoder`, which checks the free-text patterns (`text`) that a plain decoder leaves out.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec

from .decoding import text
from .durations import parse_duration
from .errors import BadRequest

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_TAGS = 64
MAX_META = 64
MAX_CHECKS = 16
MAX_METRICS = 64
MIN_CHECK_INTERVAL = 0.1
MAX_NESTING = 32  # of capabilities: deeper is no capability anyone selects on, only a way to exhaust the stack
MAX_CPU_CORES = 1 << 20
MAX_CAPABILITY_TEXT = 1024  # characters in one capability string
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+(?:%[A-Za-z0-9._-]+)?\]|[^:/\s\[\]]+):(\d{1,5})$")
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)
# Python's `$` also matches before a final newline, which no id may end with; (?!\n) works in
# JSON Schema's regular expressions too.
_NAME = ID_PATTERN[:-1] + r"(?!\n)$"
# No control characters (they rewrite terminals and logs) and no bidirectional overrides (they
# make one string look like another); free text keeps tabs and line breaks.
_PRINTABLE = r"^[^\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]*$"
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]*$"

_ADDRESS = r"^[A-Za-z0-9._:%\[\]-]+$"
PATTERNS = {  # what each pattern means, for error messages
    _NAME: f"must match {ID_PATTERN}",
    _PRINTABLE: "control characters and bidirectional overrides are not allowed",
    _TEXT: "control characters (other than tab and line breaks) and bidirectional overrides are not allowed",
    _ADDRESS: "expected a host name or an IP address",
}

_ID = re.compile(ID_PATTERN)


def checked_name(value: str, param: str) -> str:
    """`value` if it can name a service, instance or node, else `BadRequest` naming `param`."""
    if not _ID.fullmatch(value):  # not `match`: its `$` lets a final newline through
        raise BadRequest(f"{param}: {value!r} must match {ID_PATTERN}")
    return value


Name = Annotated[str, msgspec.Meta(pattern=_NAME)]
Short = Annotated[str, text(_PRINTABLE, max_length=128)]
Text = Annotated[str, text(_TEXT, max_length=512)]
# A host name or an IP address (with an IPv6 zone): nothing a resolver or a log could misread.
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_ADDRESS)]
Target = Annotated[str, text(_PRINTABLE, min_length=1, max_length=255)]  # see validate_checks
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Duration = Annotated[str, msgspec.Meta(max_length=32)]
MAX_EXPRESSION = 2048  # characters of a CEL expression: a selector's or a metric rule's
Expression = Annotated[str, text(_TEXT, min_length=1, max_length=MAX_EXPRESSION)]
Tag = Annotated[str, text(_PRINTABLE, min_length=1, max_length=128)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)]
Meta = Annotated[dict[Short, Text], msgspec.Meta(max_length=MAX_META)]
Labels = Annotated[dict[Short, Text], msgspec.Meta(max_length=MAX_META)]
# Names of numbers and capabilities: bounded, not pattern-checked, since every heartbeat carries
# them and a pattern costs a regular-expression search per string (they are never shown as text).
MAX_KEY = 128
Key = Annotated[str, msgspec.Meta(max_length=MAX_KEY)]
Metrics = Annotated[dict[Key, float], msgspec.Meta(max_length=MAX_METRICS)]
Status = Literal["passing", "warning", "critical", "maintenance"]
CheckStatus = Literal["passing", "warning", "critical"]
HEALTHY = frozenset({"passing", "warning"})


# Records hold no reference cycles, so they stay out of the garbage collector's way (gc=False):
# with hundreds of thousands of them alive, every collection would otherwise walk them all.


class Spec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, gc=False):
    """Base of everything a user sends: unknown fields are an error, defaults are not echoed."""


class Location(Spec, kw_only=True):
    region: Short | None = None
    zone: Short | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None


Count = Annotated[int, msgspec.Meta(ge=0, le=100)]


class CheckSpec(Spec, kw_only=True):
    """One health check; field names follow Consul's (url, tcp, grpc, ttl).

    Thresholds count consecutive probe results (a metric check's: evaluations); 0 and 1 both mean
    "at once". A `metric` check judges live metrics with CEL: `critical` first, then `warning`;
    metrics older than `max_age` make it `stale_status`; with `scrape` the server reads the metrics
    itself from a Prometheus endpoint every `interval`.
    """

    type: Literal["http", "tcp", "grpc", "ttl", "metric"]
    name: Short | None = None
    url: Text | None = None
    tcp: Target | None = None
    grpc: Target | None = None
    ttl: Duration | None = None
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: Annotated[dict[Short, Text], msgspec.Meta(max_length=32)] = {}
    expect_status: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    tls_skip_verify: bool = False
    tls_server_name: Short | None = None  # the name an HTTPS target's certificate is checked for (and SNI)
    warn_latency: Duration | None = None
    interval: Duration = "10s"
    timeout: Duration = "2s"
    success_before_passing: Count = 0
    failures_before_warning: Count | None = None
    failures_before_critical: Count = 0
    initial_status: CheckStatus | None = None
    deregister_critical_after: Duration | None = None
    warning: Expression | None = None
    critical: Expression | None = None
    max_age: Duration | None = None
    stale_status: Literal["warning", "critical"] = "warning"
    scrape: Text | None = None


class InstanceSpec(Spec, kw_only=True):
    """One endpoint of a service, as registered."""

    service: Name | None = None
    id: Name | None = None
    node: Name | None = None
    address: Address
    port: Port
    protocol: Literal["http", "https", "grpc", "tcp", "udp"] = "http"
    version: Short | None = None
    tags: Tags = []
    meta: Meta = {}
    location: Location | None = None
    capabilities: dict[Key, Any] = {}
    capacity: Annotated[dict[Key, float], msgspec.Meta(max_length=MAX_METRICS)] = {}
    weight: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 100
    checks: Annotated[list[CheckSpec], msgspec.Meta(max_length=MAX_CHECKS)] = []
    metrics: Metrics = {}


class Gpu(Spec, kw_only=True):
    model: Short
    memory_gb: Annotated[float, msgspec.Meta(ge=0)]
    count: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    compute_capability: Short | None = None


class Resources(Spec, kw_only=True):
    gpus: Annotated[list[Gpu], msgspec.Meta(max_length=64)] = []
    cpu_cores: Annotated[int, msgspec.Meta(ge=0, le=MAX_CPU_CORES)] | None = None
    memory_gb: Annotated[float, msgspec.Meta(ge=0)] | None = None
    storage_gb: Annotated[float, msgspec.Meta(ge=0)] | None = None
    storage_kind: Short | None = None
    bandwidth_gbps: Annotated[float, msgspec.Meta(ge=0)] | None = None


class NodeSpec(Spec, kw_only=True):
    """A machine: a compute, storage or network resource record. Its checks cover every instance on it."""

    id: Name | None = None
    kind: Literal["compute", "storage", "network"] = "compute"
    address: Address | None = None
    location: Location | None = None
    resources: Resources = msgspec.field(default_factory=Resources)
    labels: Labels = {}
    version: Short | None = None
    checks: Annotated[list[CheckSpec], msgspec.Meta(max_length=MAX_CHECKS)] = []


class Heartbeat(Spec, kw_only=True):
    """A TTL renewal carrying live metrics, and optionally a status and output for the TTL check."""

    metrics: Metrics | None = None
    status: CheckStatus | None = None
    output: Text | None = None


class Report(Spec, kw_only=True):
    """One passive observation of traffic to an instance, from a client or the gateway."""

    service: Name
    id: Name
    ok: bool
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    code: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None


MAX_REPORTS = 1000
Reports = Annotated[list[Report], msgspec.Meta(max_length=MAX_REPORTS)]
# What one batch's body may hold: under the server's 64 KiB body limit, where 1,000 reports with
# long names would not fit.
MAX_REPORTS_BYTES = 60 * 1024
_encode_report = msgspec.json.Encoder().encode


def report_batches(reports: list[Report]) -> Iterator[bytes]:
    """`reports` as JSON bodies the server takes: at most MAX_REPORTS and MAX_REPORTS_BYTES each."""
    batch: list[bytes] = []
    size = 2  # the brackets
    for part in map(_encode_report, reports):
        if batch and (len(batch) == MAX_REPORTS or size + len(part) + 1 > MAX_REPORTS_BYTES):
            yield b"[" + b",".join(batch) + b"]"
            batch, size = [], 2
        batch.append(part)
        size += len(part) + 1
    if batch:
        yield b"[" + b",".join(batch) + b"]"


class RulesRequest(Spec, kw_only=True):
    """Metric checks that every instance of a service takes, besides its own."""

    rules: Annotated[list[CheckSpec], msgspec.Meta(max_length=MAX_CHECKS)]


class MaintenanceRequest(Spec, kw_only=True):
    enable: bool
    reason: Text = ""


# --- what the server shows -----------------------------------------------------------------


class View(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """Base of what the server returns."""


class CheckState(View, kw_only=True):
    name: str
    type: str
    status: CheckStatus
    output: str = ""
    last_checked: float | None = None
    duration_ms: float | None = None
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    critical_since: float | None = None


class Maintenance(View, kw_only=True):
    reason: str = ""
    since: float


class Ejection(View, kw_only=True):
    """Out of default listings until `until`: clients' reports agree that it is failing."""

    reason: str
    until: float
    count: int


class InstanceView(InstanceSpec, forbid_unknown_fields=False, kw_only=True):
    status: Status
    check_states: tuple[CheckState, ...] = ()  # a tuple of untracked Structs: the GC drops it
    maintenance: Maintenance | None = None
    ejected: Ejection | None = None
    index: int
    registered_at: float
    updated_at: float


class NodeView(NodeSpec, forbid_unknown_fields=False, kw_only=True):
    status: CheckStatus
    metrics: dict[str, float] = {}  # live, from the node's heartbeats
    check_states: tuple[CheckState, ...] = ()  # a tuple of untracked Structs: the GC drops it
    index: int
    registered_at: float
    updated_at: float


class ServiceSummary(View, kw_only=True):
    name: str
    instances: int
    healthy: int
    tags: list[str]
    versions: list[str]


class ServerInfo(View, kw_only=True):
    version: str
    store: str
    index: int
    data_dir: str | None = None
    instances: int
    nodes: int
    watchers: int
    active_checks: int
    expiry_protection: bool  # TTL expiry held: many lapsed at once (see health/protection.py)
    # On a shared store (etcd): this server, the live servers, etcd's members, its share of checks.
    id: str | None = None
    peers: list[Peer] | None = None
    members: list[dict[str, Any]] | None = None
    checks_here: int | None = None


class Peer(View, kw_only=True):
    """A server on the shared store, as it registered itself."""

    id: str
    address: str  # its HTTP front
    version: str
    started_at: float


class ReportsAccepted(View, kw_only=True):
    accepted: int
    ignored: int  # about instances that are not registered


LeftReason = Literal["deregistered", "critical", "maintenance", "ejected", "unmatched"]


class Left(View, kw_only=True):
    """The data of a watch's `delete` event: which instance left the stream's view, and why."""

    service: str
    id: str
    # deregistered, or still registered but: critical, maintenance, ejected (clients' reports),
    # or unmatched (it no longer fits the stream's selector)
    reason: LeftReason


class ServiceRules(View, kw_only=True):
    """A service's metric rules, as stored and shown (`rules: []` when it has none)."""

    service: str
    rules: list[CheckSpec]
    updated_at: float | None = None


class ErrorBody(View, kw_only=True):
    error: str


# --- stored records: what must survive a restart ---------------------------------------------
# The store numbers every change itself (its revision), so no index is stored inside a record.


class InstanceRecord(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    spec: InstanceSpec
    registered_at: float
    maintenance: Maintenance | None = None
    registrant: str | None = None  # who registered it, as the front names callers; None: its service


class NodeRecord(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    spec: NodeSpec
    registered_at: float


_TARGET = {"http": "url", "tcp": "tcp", "grpc": "grpc", "ttl": "ttl"}  # the field each kind probes
_METRIC_ONLY = ("warning", "critical", "max_age", "scrape")


def validate_checks(checks: list[CheckSpec], where: str = "checks") -> None:
    """What msgspec cannot say in a type: the target each kind needs and sane durations."""
    for i, check in enumerate(checks):
        field = f"{where}[{i}]"
        if check.type != "metric" and getattr(check, _TARGET[check.type]) is None:
            name = _TARGET[check.type]
            raise BadRequest(f"{field}.{name}: a {check.type} check needs `{name}`")
        for name in _METRIC_ONLY if check.type != "metric" else _TARGET.values():
            if getattr(check, name) is not None:
                takes = "only metric checks take it" if check.type != "metric" else "metric checks do not take it"
                raise BadRequest(f"{field}.{name}: {takes}")
        if check.type == "ttl" and parse_duration(check.ttl or "", f"{field}.ttl") <= 0:
            raise BadRequest(f"{field}.ttl: must be positive")
        if parse_duration(check.interval, f"{field}.interval") < MIN_CHECK_INTERVAL:
            raise BadRequest(f"{field}.interval: must be at least 100ms")
        if parse_duration(check.timeout, f"{field}.timeout") <= 0:
            raise BadRequest(f"{field}.timeout: must be positive")
        if check.deregister_critical_after is not None:
            parse_duration(check.deregister_critical_after, f"{field}.deregister_critical_after")
        if check.warn_latency is not None:
            parse_duration(check.warn_latency, f"{field}.warn_latency")
        if check.type == "tcp":
            _check_host_port(check.tcp or "", f"{field}.tcp", "host:port")
        if check.type == "grpc":
            _check_host_port((check.grpc or "").split("/", 1)[0], f"{field}.grpc", "host:port or host:port/service")
        if check.type == "http":
            _check_url(check.url or "", f"{field}.url")
        if check.scrape is not None:
            _check_url(check.scrape, f"{field}.scrape")
        if check.max_age is not None and parse_duration(check.max_age, f"{field}.max_age") <= 0:
            raise BadRequest(f"{field}.max_age: must be positive")
        if check.tls_server_name is not None:
            _check_host(check.tls_server_name, f"{field}.tls_server_name")
        for name, value in check.headers.items():
            if not _TOKEN.match(name):
                raise BadRequest(f"{field}.headers: {name!r} is not a header name")
            if any(c in value for c in "\r\n\x00"):
                raise BadRequest(f"{field}.headers.{name}: line breaks and NUL cannot be sent in a header")


def _check_host(host: str, field: str) -> None:
    """A host name of valid labels, or an IP address (IPv6 in brackets or bare)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            raise BadRequest(f"{field}: {host!r} is not an IPv6 address") from None
        return
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadRequest(f"{field}: {host!r} is not a host name (labels of 1 to 63 letters, digits, - or _)")


def _check_port(port: int | None, field: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise BadRequest(f"{field}: port {port} is out of range (1-65535)")


def _check_host_port(target: str, field: str, expected: str) -> None:
    match = _HOST_PORT.match(target)
    if match is None:
        raise BadRequest(f"{field}: expected {expected}")
    _check_host(match.group(1), field)
    _check_port(int(match.group(2)), field)


def _check_url(url: str, field: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise BadRequest(f"{field}: must start with http:// or https://")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise BadRequest(f"{field}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise BadRequest(f"{field}: no host")
    _check_host(parts.hostname, field)
    _check_port(port, field)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def validate_capabilities(capabilities: dict[str, Any]) -> None:
    """Free-form capabilities must be values selectors can read, at a cost they can afford: CEL
    refuses a whole record whose integers do not fit in 64 bits (so it could never match), and
    its 10,000 iterations over long strings would hold the server for a second per record."""
    containers: list[tuple[Any, int]] = [(capabilities, 1)]
    while containers:  # a loop over containers, not a call per value: this runs on every registration
        container, depth = containers.pop()
        for value in container.values() if type(container) is dict else container:
            kind = type(value)  # the commonest kinds first: strings, then numbers
            if kind is str:
                if len(value) <= MAX_CAPABILITY_TEXT:
                    continue
            elif kind is int:
                if INT64_MIN <= value <= INT64_MAX:
                    continue
            elif kind is dict or kind is list:
                if depth >= MAX_NESTING:
                    raise BadRequest(f"capabilities: nested more than {MAX_NESTING} deep")
                containers.append((value, depth + 1))
                continue
            else:
                continue
            what = "integers must fit in 64 bits" if kind is int else f"strings of at most {MAX_CAPABILITY_TEXT:,}"
            raise BadRequest(f"capabilities{_where_unfit(capabilities)}: {what}")


def _fits(value: Any) -> bool:
    if type(value) is int:
        return INT64_MIN <= value <= INT64_MAX
    return type(value) is not str or len(value) <= MAX_CAPABILITY_TEXT


def _where_unfit(value: Any) -> str | None:
    """Where in `value` a value that does not fit is ("" for value itself); None if nowhere.

    Only for the error message: `validate_capabilities` finds out whether, without paths."""
    kind = type(value)
    if kind is dict:
        items = value.items()
    elif kind is list:
        items = enumerate(value)
    else:
        return None if _fits(value) else ""
    for key, item in items:
        found = _where_unfit(item)
        if found is not None:
            return (f".{key}" if kind is dict else f"[{key}]") + found
    return None


def check_name(check: CheckSpec, position: int) -> str:
    return check.name or (check.type if position == 0 else f"{check.type}-{position}")
