"""Consul's agent endpoints: register, deregister, TTL check updates, maintenance, and the agent's views.

A registration becomes an instance (service `Name`, id `ID`, checks from `Check`/`Checks`), so
what a Consul client registers is what every other front shows. Consul names a service instance
by its id alone; an id that already belongs to another service is a 409 rather than a silent
move, since the two may belong to different providers. A TTL check update is a heartbeat
carrying that status.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ... import __version__
from ...errors import BadRequest, Conflict, NotFound
from ...records import CheckStatus, Heartbeat, InstanceSpec, checked_name
from ..http.call import Call, Reply
from ..http.inputs import decode
from .reads import consul_headers
from .shapes import UNSUPPORTED_CHECKS, CheckUpdate, ConsulCheck, Registration, decode_consul
from .views import DATACENTER, SERVER_NODE, agent_service, node_id

_encode = msgspec.json.Encoder().encode
_STATUSES: dict[str, CheckStatus] = {"passing": "passing", "warning": "warning", "critical": "critical"}


def _check(check: ConsulCheck, field: str, default_id: str) -> dict[str, Any]:
    for unsupported in UNSUPPORTED_CHECKS:
        if getattr(check, unsupported) not in (None, "", [], {}):
            raise BadRequest(f"{field}.{unsupported}: this kind of check is not supported by swarm")
    spec: dict[str, Any]
    if check.HTTP:
        headers = {k: ", ".join(v) for k, v in check.Header.items()}
        spec = {"type": "http", "url": check.HTTP, "method": check.Method or "GET", "headers": headers}
        spec["tls_skip_verify"] = check.TLSSkipVerify
        if check.TLSServerName:
            spec["tls_server_name"] = check.TLSServerName
    elif check.TCP:
        spec = {"type": "tcp", "tcp": check.TCP}
    elif check.GRPC:
        if check.GRPCUseTLS:
            raise BadRequest(f"{field}.GRPCUseTLS: gRPC checks over TLS are not supported by swarm")
        spec = {"type": "grpc", "grpc": check.GRPC}
    elif check.TTL:
        spec = {"type": "ttl", "ttl": check.TTL}
    else:
        raise BadRequest(f"{field}: one of HTTP, TCP, GRPC or TTL is needed")
    spec["name"] = check.CheckID or default_id
    optional = {
        "interval": check.Interval,
        "timeout": check.Timeout,
        "deregister_critical_after": check.DeregisterCriticalServiceAfter,
        "initial_status": check.Status or "critical",  # as in Consul: critical until it first passes
        "failures_before_warning": check.FailuresBeforeWarning,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    spec["success_before_passing"] = check.SuccessBeforePassing
    spec["failures_before_critical"] = check.FailuresBeforeCritical
    return spec


def _spec(registration: Registration, iid: str, address: str) -> InstanceSpec:
    if registration.Kind or registration.Proxy is not None or registration.Connect is not None:
        raise BadRequest("Kind, Proxy, Connect: Connect proxies and gateways are not supported by swarm")
    if registration.SocketPath:
        raise BadRequest("SocketPath: services on Unix sockets are not supported by swarm")
    given = [("Check", registration.Check)] if registration.Check else []
    given += [(f"Checks[{n}]", c) for n, c in enumerate(registration.Checks)]
    # Consul's default check ids: service:ID for a lone check, service:ID:N when there are several.
    ids = [f"service:{iid}"] if len(given) == 1 else [f"service:{iid}:{n}" for n in range(1, len(given) + 1)]
    checks = [_check(check, field, default) for (field, check), default in zip(given, ids, strict=True)]
    body: dict[str, Any] = {
        "address": registration.Address or address,
        "port": registration.Port,
        "tags": registration.Tags,
        "meta": registration.Meta,
        "checks": checks,
    }
    if registration.Weights is not None:
        body["weight"] = registration.Weights.Passing
    if registration.Port == 0:
        raise BadRequest("Port: swarm needs the service's port (1-65535)")
    # Through the front's decoder, not msgspec.convert: it is what checks the text patterns.
    return decode(msgspec.json.encode(body), InstanceSpec)


def _go_bool(text: str | None, field: str) -> bool:
    """A boolean as Go's strconv.ParseBool reads it, which is what Consul clients send."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequest(f"{field}: expected true or false, got {text!r}")


def _empty(call: Call) -> Reply:
    return Reply(b"", headers=consul_headers(call.context.registry.index))


async def register(call: Call) -> Reply:
    registration = decode_consul(await call.body(), Registration)
    # Names the native API and DNS can carry: an ID like "web:8080" would be listed where no
    # client could read it back, and could not be named in a path.
    service = checked_name(registration.Name, "Name")
    iid = checked_name(registration.ID, "ID") if registration.ID else service
    call.context.acl.require(call.caller, "services", service, "write")
    elsewhere = [s for s in call.context.registry.services_with(iid) if s != service]
    if elsewhere:
        raise Conflict(f"ID: {iid!r} is an instance of service {elsewhere[0]!r}; deregister it first")
    spec = _spec(registration, iid, call.client)
    await call.context.registry.register(service, iid, spec, registrant=call.caller.id)
    return _empty(call)


def _service_of(call: Call, iid: str) -> str:
    """The service instance `iid` belongs to, once the caller may write it; Consul's 404 otherwise."""
    services = call.context.registry.services_with(iid)
    if not services:
        raise NotFound(f'Unknown service ID "{iid}"')
    call.context.acl.require(call.caller, "services", services[0], "write")
    return services[0]


async def deregister(call: Call) -> Reply:
    iid = call.params["id"]
    await call.context.registry.deregister(_service_of(call, iid), iid)
    return _empty(call)


async def maintenance(call: Call) -> Reply:
    iid = call.params["id"]
    enable = _go_bool(call.query_params.get("enable"), "enable")
    reason = call.query_params.get("reason", "")
    await call.context.registry.set_maintenance(_service_of(call, iid), iid, enable, reason)
    return _empty(call)


def _instance_of_check(call: Call, check_id: str) -> tuple[str, str]:
    """The instance holding TTL check `check_id`: `service:ID[:N]` names it, others are looked for."""
    if check_id.startswith("service:"):
        iid = check_id.removeprefix("service:").split(":", 1)[0]
        if call.context.registry.services_with(iid):
            return _service_of(call, iid), iid
    registry = call.context.registry
    for summary in registry.services():
        for state in registry.published(summary.name):
            if any(c.name == check_id for c in state.view.check_states):
                iid = state.view.id or ""
                return _service_of(call, iid), iid
    raise NotFound(f'Unknown check ID "{check_id}"')


async def _update(call: Call, status: CheckStatus, output: str) -> Reply:
    service, iid = _instance_of_check(call, call.params["check"])
    beat = decode(msgspec.json.encode({"status": status, "output": output}), Heartbeat)
    call.context.registry.heartbeat(service, iid, beat)
    return _empty(call)


async def check_pass(call: Call) -> Reply:
    return await _update(call, "passing", call.query_params.get("note", ""))


async def check_warn(call: Call) -> Reply:
    return await _update(call, "warning", call.query_params.get("note", ""))


async def check_fail(call: Call) -> Reply:
    return await _update(call, "critical", call.query_params.get("note", ""))


async def check_update(call: Call) -> Reply:
    update = decode_consul(await call.body(), CheckUpdate)
    status = _STATUSES.get(update.Status)
    if status is None:
        raise BadRequest(f"Status: expected passing, warning or critical, got {update.Status!r}")
    return await _update(call, status, update.Output)


async def services(call: Call) -> Reply:
    """Every instance this server holds (a swarm server is every service's agent), by id."""
    if call.query_params.get("filter"):
        raise BadRequest("filter: not supported by swarm's Consul-compatible API")
    registry, policy = call.context.registry, call.caller.policy
    shown = {
        state.view.id or "": agent_service(state.view)
        for summary in registry.services()
        if policy.allows("services", summary.name, "read")
        for state in registry.published(summary.name)
    }
    return Reply(_encode(shown), headers=consul_headers(registry.index))


async def agent_self(call: Call) -> Reply:
    """What Consul clients read of their agent: chiefly the datacenter and node name."""
    me = {
        "Config": {
            "Datacenter": DATACENTER,
            "NodeName": SERVER_NODE,
            "NodeID": node_id(SERVER_NODE),
            "Server": True,
            "Version": f"1.17.0+swarm.{__version__}",
        },
        "Member": {"Name": SERVER_NODE, "Addr": "127.0.0.1", "Port": 8301, "Status": 1, "Tags": {"dc": DATACENTER}},
        "Meta": {},
    }
    return Reply(_encode(me), headers=consul_headers(call.context.registry.index))


async def leader(call: Call) -> Reply:
    return Reply(b'"127.0.0.1:8300"', headers=consul_headers(call.context.registry.index))


async def peers(call: Call) -> Reply:
    return Reply(b'["127.0.0.1:8300"]', headers=consul_headers(call.context.registry.index))
