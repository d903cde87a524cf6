"""Prometheus service discovery over the lookup: targets in Prometheus' http_sd format."""
