"""The Python SDK: `Client`, `AsyncClient` and the balancer they make."""
