"""Every route of the API in one table; the OpenAPI document is generated from the same table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ...records import (
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
    ServerInfo,
    ServiceSummary,
)
from . import nodes, services, system, watch

BLOCKING = ("index", "wait")


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    body: Any = None
    response: Any = None
    query: tuple[str, ...] = ()
    media_type: str = "application/json"


ROUTES = [
    Route(
        "GET",
        "/v1/services/{service}/instances/{id}",
        services.get_instance,
        "One instance",
        response=InstanceView,
        query=BLOCKING,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}",
        services.register,
        "Register or replace an instance",
        body=InstanceSpec,
        response=InstanceView,
    ),
    Route("DELETE", "/v1/services/{service}/instances/{id}", services.deregister, "Deregister an instance"),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}/heartbeat",
        services.heartbeat,
        "Renew TTL checks and replace live metrics",
        body=Heartbeat,
        response=InstanceView,
    ),
    Route(
        "PUT",
        "/v1/services/{service}/instances/{id}/maintenance",
        services.maintenance,
        "Enter or leave maintenance mode",
        body=MaintenanceRequest,
        response=InstanceView,
    ),
    Route(
        "GET",
        "/v1/services/{service}/instances/{id}/checks",
        services.list_checks,
        "The live state of an instance's checks",
        response=list[CheckState],
    ),
    Route(
        "GET",
        "/v1/services",
        services.catalog,
        "The catalog: every service with counts, tags and versions",
        response=list[ServiceSummary],
        query=BLOCKING,
    ),
    Route(
        "GET",
        "/v1/services/{service}",
        services.list_instances,
        "Instances of a service",
        response=list[InstanceView],
        query=("tag", "selector", "all", "near", "limit", *BLOCKING),
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
        query=("service", "selector", "all", "index"),
        media_type="text/event-stream",
    ),
    Route(
        "GET", "/v1/nodes", nodes.list_nodes, "Nodes", response=list[NodeView], query=("selector", "kind", *BLOCKING)
    ),
    Route("GET", "/v1/nodes/{id}", nodes.get_node, "One node", response=NodeView, query=BLOCKING),
    Route("PUT", "/v1/nodes/{id}", nodes.put_node, "Register or replace a node", body=NodeSpec, response=NodeView),
    Route("DELETE", "/v1/nodes/{id}", nodes.delete_node, "Remove a node"),
    Route("GET", "/v1/server", system.server_info, "Version, store and change index", response=ServerInfo),
    Route("GET", "/healthz", system.healthz, "Liveness"),
    Route("GET", "/metrics", system.metrics, "Prometheus metrics", media_type="text/plain"),
    Route("GET", "/v1/openapi.json", system.openapi, "This document"),
]


def openapi_document(version: str) -> bytes:
    types = [t for e in ROUTES for t in (e.body, e.response) if t is not None] + [ErrorBody]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in ROUTES:
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in ("service", "id")
                if "{" + p + "}" in e.path
            ]
            + [{"name": q, "in": "query", "schema": {"type": "string"}} for q in e.query],
            "responses": {
                "200": {"description": "OK", "content": {e.media_type: {"schema": by_type.get(e.response, {})}}},
                "4XX": {
                    "description": "Bad input, naming the field",
                    "content": {"application/json": {"schema": by_type[ErrorBody]}},
                },
            },
        }
        if e.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": by_type[e.body]}}}
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Swarm Service Discovery", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
    return msgspec.json.encode(document)
