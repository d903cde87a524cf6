"""Consul's JSON shapes: a service registration as Consul clients send it, and the answers they read.

Field names are Consul's (Go's), so the attributes are spelled as Consul spells them. Consul
decodes JSON keys case-insensitively (py-consul sends `{"ttl": "10s"}` for a check), so a
registration's keys are matched to these fields without regard to case before it is decoded.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...errors import BadRequest


class ConsulCheck(msgspec.Struct, kw_only=True):
    CheckID: str | None = None
    Name: str | None = None
    Notes: str | None = None
    Status: str | None = None
    HTTP: str | None = None
    Method: str | None = None
    Header: dict[str, list[str]] = {}
    TLSSkipVerify: bool = False
    TLSServerName: str | None = None
    TCP: str | None = None
    GRPC: str | None = None
    GRPCUseTLS: bool = False
    TTL: str | None = None
    Interval: str | None = None
    Timeout: str | None = None
    DeregisterCriticalServiceAfter: str | None = None
    SuccessBeforePassing: int = 0
    FailuresBeforeWarning: int | None = None
    FailuresBeforeCritical: int = 0
    # What Consul can check and swarm cannot: refused by name rather than quietly not checked.
    Args: Any = None
    Script: Any = None  # Consul before 1.1
    ScriptArgs: Any = None
    DockerContainerID: Any = None
    Shell: Any = None
    UDP: Any = None
    H2PING: Any = None
    OSService: Any = None
    AliasNode: Any = None
    AliasService: Any = None
    Body: Any = None


class Weights(msgspec.Struct, kw_only=True):
    Passing: int = 1
    Warning: int = 1


class Registration(msgspec.Struct, kw_only=True):
    """`PUT /v1/agent/service/register`."""

    Name: str
    ID: str | None = None
    Tags: list[str] = []
    Address: str = ""
    Port: int = 0
    Meta: dict[str, str] = {}
    Weights: Weights | None = None
    Check: ConsulCheck | None = None
    Checks: list[ConsulCheck] = []
    EnableTagOverride: bool = False
    Kind: str = ""
    Proxy: Any = None
    Connect: Any = None
    SocketPath: str = ""


class CheckUpdate(msgspec.Struct, kw_only=True):
    """`PUT /v1/agent/check/update/{check}`."""

    Status: str = "passing"
    Output: str = ""


UNSUPPORTED_CHECKS = (
    *("Args", "Script", "ScriptArgs", "DockerContainerID", "Shell", "UDP", "H2PING", "OSService", "AliasNode"),
    *("AliasService", "Body"),
)


def _fields(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {name.lower(): name for name in kind.__struct_fields__}


_CANONICAL = {Registration: _fields(Registration), ConsulCheck: _fields(ConsulCheck), Weights: _fields(Weights)}
_CANONICAL[CheckUpdate] = _fields(CheckUpdate)
_NESTED: dict[str, type[msgspec.Struct]] = {"Check": ConsulCheck, "Checks": ConsulCheck, "Weights": Weights}


def canonical(value: Any, kind: type[msgspec.Struct]) -> Any:
    """`value` with its keys (and its checks' keys) spelled as `kind`'s fields, whatever their case."""
    if not isinstance(value, dict):
        return value
    names = _CANONICAL[kind]
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = names.get(key.lower(), key) if isinstance(key, str) else key
        nested = _NESTED.get(field)
        if nested is not None and kind is Registration:
            item = [canonical(i, nested) for i in item] if isinstance(item, list) else canonical(item, nested)
        out[field] = item
    return out


def decode_consul(body: bytes, kind: type[msgspec.Struct]) -> Any:
    """A Consul request body as `kind`; a 400 naming the field when it is wrong."""
    try:
        raw = msgspec.json.decode(body) if body.strip() else {}
        return msgspec.convert(canonical(raw, kind), kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body: invalid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("body: nested too deeply") from None


# --- answers -------------------------------------------------------------------------------------


class AgentService(msgspec.Struct, kw_only=True):
    ID: str
    Service: str
    Tags: list[str]
    Meta: dict[str, str]
    Port: int
    Address: str
    Weights: Weights
    EnableTagOverride: bool = False
    Datacenter: str
    CreateIndex: int
    ModifyIndex: int


class HealthCheck(msgspec.Struct, kw_only=True):
    Node: str
    CheckID: str
    Name: str
    Status: str
    Notes: str = ""
    Output: str = ""
    ServiceID: str = ""
    ServiceName: str = ""
    ServiceTags: list[str] = []
    Type: str = ""
    CreateIndex: int
    ModifyIndex: int


class Node(msgspec.Struct, kw_only=True):
    ID: str
    Node: str
    Address: str
    Datacenter: str
    TaggedAddresses: dict[str, str]
    Meta: dict[str, str]
    CreateIndex: int
    ModifyIndex: int


class ServiceEntry(msgspec.Struct, kw_only=True):
    """One element of `/v1/health/service/{name}`."""

    Node: Node
    Service: AgentService
    Checks: list[HealthCheck]


class CatalogService(msgspec.Struct, kw_only=True):
    """One element of `/v1/catalog/service/{name}`."""

    ID: str
    Node: str
    Address: str
    Datacenter: str
    TaggedAddresses: dict[str, str]
    NodeMeta: dict[str, str]
    ServiceID: str
    ServiceName: str
    ServiceTags: list[str]
    ServiceAddress: str
    ServicePort: int
    ServiceMeta: dict[str, str]
    ServiceWeights: Weights
    ServiceEnableTagOverride: bool = False
    CreateIndex: int
    ModifyIndex: int


class NodeServices(msgspec.Struct, kw_only=True):
    """`/v1/catalog/node/{node}`."""

    Node: Node
    Services: dict[str, AgentService]
