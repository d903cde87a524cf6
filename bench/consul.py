"""Consul-API reads: `/v1/health/service/llm?passing` on 100 instances vs nginx serving the same bytes.

The same fleet, load and pinning as bench.reads; the answer is Consul's shape (node, service and
checks per instance), cached like every read.

python -m bench.consul [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

from bench.reads import against_nginx


def main() -> None:
    against_nginx("/v1/health/service/llm?passing", 100, "100 instances in Consul's shape", " (target >= 0.5)")


if __name__ == "__main__":
    main()
