"""Active health checking: check state and thresholds, probers, the scheduler, TTL deadlines, and
protection against mass expiry. Passive checks (what traffic saw) live in `balance.outliers`."""
