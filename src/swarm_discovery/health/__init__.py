"""Health checking: deadlines for TTL checks now; active probes and passive checks later."""
