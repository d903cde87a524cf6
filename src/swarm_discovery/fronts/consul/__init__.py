"""A Consul-compatible HTTP subset over the lookup: agent, catalog, health and status endpoints."""
