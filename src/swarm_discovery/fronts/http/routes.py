"""Every route of the API in one table; the OpenAPI document is generated from the same table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ...acl import CreatedToken, Level, Section, TokenRequest, TokenView
from ...records import (
    ID_PATTERN,
    CheckState,
    ErrorBody,
    Heartbeat,
    InstanceSpec,
    InstanceView,
    MaintenanceRequest,
    NodeSpec,
    NodeView,
    Reports,
    ReportsAccepted,
    RulesRequest,
    ServerInfo,
    ServiceRules,
    ServiceSummary,
)
from ...selector import MAX_SELECTOR_LENGTH
from . import acl, nodes, rules, services, system, watch
from .inputs import MAX_DIGITS
from .nodes import KINDS

BLOCKING = ("index", "wait")


class Deregistered(msgspec.Struct):
    deregistered: bool


class Deleted(msgspec.Struct):
    deleted: bool


class Liveness(msgspec.Struct):
    status: str


TEXT = {"type": "string"}
SSE_EVENT = {  # each event of the stream, as OpenAPI tools read text/event-stream
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the change index"},
        "event": {"type": "string", "enum": ["snapshot", "put", "delete"]},
        "data": {"type": "string", "description": "JSON: the instances, one instance, or {service, id}"},
    },
}


class Access(msgspec.Struct, frozen=True):
    """What a route needs with ACLs on: `level` on the name a path or query parameter holds.

    Without a parameter, the route lists a section: it is filtered to what the caller may read,
    and refused only to a caller that may read none of it.
    """

    section: Section
    level: Level
    param: str | None = None


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    body: Any = None
    response: Any = None
    query: tuple[str, ...] = ()  # names described in _DESCRIBED
    media_type: str = "application/json"
    body_required: bool = True
    access: Access | None = None  # None: open to anyone (each handler checks what the route cannot)


READ_SERVICE = Access("services", "read", "service")
WRITE_SERVICE = Access("services", "write", "service")
OPERATOR_READ = Access("operator", "read")
OPERATOR_WRITE = Access("operator", "write")


ROUTES = [
    Route(
        "GET",
        "/v1/services/{service}/instances/{id}",
        services.get_instance,
        "One instance",
        response=InstanceView,
        query=BLOCKING,
        access=READ_SERVICE,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}",
        services.register,
        "Register or replace an instance",
        body=InstanceSpec,
        response=InstanceView,
        access=WRITE_SERVICE,
    ),
    Route(
        "DELETE",
        "/v1/services/{service}/instances/{id}",
        services.deregister,
        "Deregister an instance",
        response=Deregistered,
        access=WRITE_SERVICE,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}/heartbeat",
        services.heartbeat,
        "Renew TTL checks and replace live metrics",
        body=Heartbeat,
        body_required=False,
        response=InstanceView,
        access=WRITE_SERVICE,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}/maintenance",
        services.maintenance,
        "Enter or leave maintenance mode",
        body=MaintenanceRequest,
        response=InstanceView,
        access=WRITE_SERVICE,
    ),
    Route(
        "GET",
        "/v1/services/{service}/instances/{id}/checks",
        services.list_checks,
        "The live state of an instance's checks",
        response=list[CheckState],
        access=READ_SERVICE,
    ),
    Route(
        "GET",
        "/v1/services/{service}/rules",
        rules.get_rules,
        "The metric rules every instance of the service takes",
        response=ServiceRules,
        access=READ_SERVICE,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/rules",
        rules.put_rules,
        "Set the service's metric rules, for its instances now and later",
        body=RulesRequest,
        response=ServiceRules,
        access=WRITE_SERVICE,
    ),
    Route(
        "DELETE",
        "/v1/services/{service}/rules",
        rules.clear_rules,
        "Clear the service's metric rules",
        response=Deleted,
        access=WRITE_SERVICE,
    ),
    Route(
        "GET",
        "/v1/services",
        services.catalog,
        "The catalog: every service with counts, tags and versions",
        response=list[ServiceSummary],
        query=BLOCKING,
        access=Access("services", "read"),
    ),
    Route(
        "GET",
        "/v1/services/{service}",
        services.list_instances,
        "Instances of a service",
        response=list[InstanceView],
        query=("tag", "selector", "all", "near", "limit", *BLOCKING),
        access=READ_SERVICE,
    ),
    Route(
        "POST",
        "/v1/reports",
        services.reports,
        "Passive observations of traffic; instances that clients agree are failing are ejected",
        body=Reports,
        response=ReportsAccepted,
    ),
    Route(
        "GET",
        "/v1/watch",
        watch.watch,
        "Server-Sent Events: a snapshot, then every change",
        query=("service", "selector", "all", "index", "Last-Event-ID"),
        media_type="text/event-stream",
        access=READ_SERVICE,
    ),
    Route(
        "GET",
        "/v1/nodes",
        nodes.list_nodes,
        "Nodes",
        response=list[NodeView],
        query=("selector", "kind", *BLOCKING),
        access=Access("nodes", "read"),
    ),
    Route(
        "GET",
        "/v1/nodes/{id}",
        nodes.get_node,
        "One node",
        response=NodeView,
        query=BLOCKING,
        access=Access("nodes", "read", "id"),
    ),
    Route(
        "PUT",
        "/v1/nodes/{id}",
        nodes.put_node,
        "Register or replace a node",
        body=NodeSpec,
        response=NodeView,
        access=Access("nodes", "write", "id"),
    ),
    Route(
        "PUT",
        "/v1/nodes/{id}/heartbeat",
        nodes.heartbeat,
        "Renew a node's TTL checks and replace its live metrics",
        body=Heartbeat,
        body_required=False,
        response=NodeView,
        access=Access("nodes", "write", "id"),
    ),
    Route(
        "DELETE",
        "/v1/nodes/{id}",
        nodes.delete_node,
        "Remove a node",
        response=Deleted,
        access=Access("nodes", "write", "id"),
    ),
    Route(
        "PUT",
        "/v1/acl/bootstrap",
        acl.bootstrap,
        "The first management token, once (403 after)",
        response=CreatedToken,
    ),
    Route(
        "POST",
        "/v1/acl/tokens",
        acl.create_token,
        "Create a token; its secret is shown in this answer only",
        body=TokenRequest,
        response=CreatedToken,
        access=OPERATOR_WRITE,
    ),
    Route(
        "GET", "/v1/acl/tokens", acl.list_tokens, "Tokens (no secrets)", response=list[TokenView], access=OPERATOR_READ
    ),
    Route("GET", "/v1/acl/self", acl.self_token, "The token this request presents", response=TokenView),
    Route("DELETE", "/v1/acl/tokens/{id}", acl.delete_token, "Delete a token", response=Deleted, access=OPERATOR_WRITE),
    Route(
        "GET",
        "/v1/server",
        system.server_info,
        "Version, store and change index",
        response=ServerInfo,
        access=OPERATOR_READ,
    ),
    Route("GET", "/healthz", system.healthz, "Liveness", response=Liveness),
    Route("GET", "/metrics", system.metrics, "Prometheus metrics", media_type="text/plain", access=OPERATOR_READ),
    Route("GET", "/v1/openapi.json", system.openapi, "This document"),
]


_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_INDEX = {"type": "integer", "minimum": 0, "maximum": 10**MAX_DIGITS - 1}
_DESCRIBED: dict[str, dict[str, Any]] = {
    "index": {"in": "query", "schema": _INDEX, "description": "block until what the read covers moves past it"},
    "wait": {"in": "query", "schema": {"type": "string", "pattern": _DURATION}, "description": "at most 10m"},
    "tag": {"in": "query", "schema": {"type": "array", "items": {"type": "string"}}, "explode": True},
    "selector": {"in": "query", "schema": {"type": "string", "maxLength": MAX_SELECTOR_LENGTH}},
    "all": {"in": "query", "schema": {"type": "string", "enum": ["true", "false", "1", "0", ""]}},
    "near": {"in": "query", "schema": {"type": "string"}, "description": "a zone, a region or lat,lon"},
    "limit": {"in": "query", "schema": {**_INDEX, "minimum": 1}},
    "kind": {"in": "query", "schema": {"type": "string", "enum": list(KINDS)}},
    "service": {"in": "query", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}},
    "Last-Event-ID": {"in": "header", "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"}},
}
_ANSWERED_WITH_INDEX = {"X-Swarm-Index": {"schema": {"type": "integer"}, "description": "the change index"}}


def _parameters(route: Route) -> list[dict[str, Any]]:
    path = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for p in ("service", "id")
        if "{" + p + "}" in route.path
    ]
    return path + [{"name": q, **_DESCRIBED[q]} for q in route.query]


def openapi_document(version: str) -> bytes:
    types = [t for r in ROUTES for t in (r.body, r.response) if t is not None] + [ErrorBody]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(types, schemas, strict=True))
    error = {"content": {"application/json": {"schema": by_type[ErrorBody]}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        default = SSE_EVENT if r.media_type == "text/event-stream" else TEXT
        schema = by_type.get(r.response, default if r.media_type.startswith("text/") else {"type": "object"})
        ok: dict[str, Any] = {"description": "OK", "content": {r.media_type: {"schema": schema}}}
        if r.media_type == "application/json":
            ok["headers"] = _ANSWERED_WITH_INDEX
        operation: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "parameters": _parameters(r),
            "responses": {
                "200": ok,
                "4XX": {"description": "Bad input, naming the field; or not found, not allowed, too large", **error},
                "503": {"description": "Starting or stopping, or the store could not commit", **error},
            },
        }
        if r.body is not None:
            content = {"application/json": {"schema": by_type[r.body]}}
            operation["requestBody"] = {"required": r.body_required, "content": content}
        paths.setdefault(r.path, {})[r.method.lower()] = operation
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Swarm Service Discovery", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
    return msgspec.json.encode(document)
