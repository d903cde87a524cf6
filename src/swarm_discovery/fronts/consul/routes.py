"""The Consul-compatible subset, served beside the native API on the same port.

Consul's paths, methods and shapes, so that py-consul, Prometheus' `consul_sd_configs` and other
Consul-aware tools work unchanged. Any other path under Consul's prefixes is a 404 that says the
endpoint is not part of the subset (`unsupported`), never an answer of the wrong shape.
"""

from __future__ import annotations

from ..http.routes import READ_SERVICE, Access, Route
from . import agent, reads

CONSUL_PREFIXES = (
    *("/v1/agent/", "/v1/catalog/", "/v1/health/", "/v1/status/", "/v1/kv/", "/v1/session/", "/v1/event/"),
    *("/v1/coordinate/", "/v1/operator/", "/v1/connect/", "/v1/config/", "/v1/query", "/v1/txn"),
    *("/v1/snapshot", "/v1/internal/", "/v1/peering/", "/v1/namespace"),
)

CONSUL_ROUTES = [
    Route("PUT", "/v1/agent/service/register", agent.register, "Consul: register a service instance"),
    Route("PUT", "/v1/agent/service/deregister/{id}", agent.deregister, "Consul: deregister"),
    Route("PUT", "/v1/agent/service/maintenance/{id}", agent.maintenance, "Consul: maintenance mode"),
    Route("PUT", "/v1/agent/check/pass/{check}", agent.check_pass, "Consul: TTL check passing"),
    Route("PUT", "/v1/agent/check/warn/{check}", agent.check_warn, "Consul: TTL check warning"),
    Route("PUT", "/v1/agent/check/fail/{check}", agent.check_fail, "Consul: TTL check critical"),
    Route("PUT", "/v1/agent/check/update/{check}", agent.check_update, "Consul: TTL check status and output"),
    Route("GET", "/v1/agent/services", agent.services, "Consul: every instance", access=Access("services", "read")),
    Route("GET", "/v1/agent/self", agent.agent_self, "Consul: this agent"),
    Route("GET", "/v1/catalog/services", reads.catalog_services, "Consul: services", access=Access("services", "read")),
    Route("GET", "/v1/catalog/service/{service}", reads.catalog_service_, "Consul: instances", access=READ_SERVICE),
    Route("GET", "/v1/catalog/nodes", reads.catalog_nodes, "Consul: nodes", access=Access("nodes", "read")),
    Route("GET", "/v1/catalog/node/{id}", reads.catalog_node, "Consul: one node", access=Access("nodes", "read", "id")),
    Route("GET", "/v1/catalog/datacenters", reads.datacenters, "Consul: datacenters"),
    Route("GET", "/v1/health/service/{service}", reads.health_service, "Consul: instances", access=READ_SERVICE),
    Route("GET", "/v1/health/checks/{service}", reads.health_checks, "Consul: checks", access=READ_SERVICE),
    Route("GET", "/v1/status/leader", agent.leader, "Consul: the leader"),
    Route("GET", "/v1/status/peers", agent.peers, "Consul: the peers"),
]


def unsupported(method: str, path: str) -> str | None:
    """The 404 message for a Consul path outside the subset; None for a path that is not Consul's."""
    if path.startswith(CONSUL_PREFIXES):
        return f"{method} {path}: a Consul endpoint that swarm's Consul-compatible API does not serve (see README)"
    return None
