"""Reads over TLS beside plain HTTP, in the same run: bench.reads' query on three servers loaded alike.

plain: HTTP; https: --tls-cert and --tls-key (granian's own TLS); mtls: --tls-client-ca too (the
TLS relay in front of granian, `fronts/http/tls.py`). The load is ab (apache2-utils), the one
load generator here that presents a client certificate, used for all three so that they compare:
64 keep-alive connections. Beside requests/s, the server's CPU per request (its worker, every
thread), which other load on the machine disturbs less.

python -m bench.tls [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from tests.pki import Authority
from tests.server import Server

from bench.common import LOAD_CPU, alternate, load, round_arguments, start_server, with_cpu
from bench.reads import SELECTOR, instance

CONNECTIONS = 64


def ab(url: str, seconds: int, client: Path) -> dict[str, float]:
    """ab pinned to the load core: requests/s, latency percentiles, failures."""
    command = ["taskset", "-c", LOAD_CPU, "ab", "-q", "-k", "-c", str(CONNECTIONS), "-t", str(seconds)]
    command += ["-n", "100000000", "-E", str(client), url]  # -t alone would stop at 50,000 requests
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out, re.M)
        return float(found.group(1)) if found else 0.0

    return {
        "rps": number(r"^Requests per second:\s+([\d.]+)"),
        "failed": number(r"^Failed requests:\s+(\d+)") + number(r"^Non-2xx responses:\s+(\d+)"),
        "p50_ms": number(r"^\s+50%\s+(\d+)"),
        "p99_ms": number(r"^\s+99%\s+(\d+)"),
    }


def main() -> None:
    args = round_arguments(__doc__)
    ca = Authority(Path(tempfile.mkdtemp(prefix="swarm-bench-pki-")))
    cert = ca.server()
    node = ca.issue("node", cn="gpu-node-7", dns=("gpu-node-7.provider-a.swarm",), client=True)
    bundle = node.cert.with_suffix(".bundle.pem")  # ab takes the certificate and its key in one file
    bundle.write_text(node.cert.read_text() + node.key.read_text())
    tls = ("--tls-cert", str(cert.cert), "--tls-key", str(cert.key))
    context = ca.client_context(node)
    servers: dict[str, Server] = {}
    try:
        servers["plain"] = start_server()
        servers["https"] = start_server(args=tls, tls=context)
        servers["mtls"] = start_server(args=(*tls, "--tls-client-ca", str(ca.bundle)), tls=context)
        path = f"/v1/services/llm?selector={quote(SELECTOR)}"
        for label, server in servers.items():
            print(f"loading 10,000 instances into {label} ...", flush=True)
            load(server, 10_000, instance)
            assert len(server.http.get(path).json()) == 20
        size = len(servers["plain"].http.get(path).content)
        runs = {
            label: with_cpu(server.worker_pid(), args.seconds, lambda s=server: ab(s.url + path, args.seconds, bundle))
            for label, server in servers.items()
        }
        results = alternate(args.rounds, runs)
        print(
            f"answer: {size} bytes, 20 instances of 10,000; ab -k -c{CONNECTIONS} -t{args.seconds}, "
            f"{args.rounds} rounds of plain, https, mtls; servers on core 0, ab on core 1"
        )
        print(f"{'round':6} {'':6} {'req/s':>8} {'CPU us/req':>11} {'p50 ms':>7} {'p99 ms':>7} {'failed':>7}")
        for n in range(args.rounds):
            for label in servers:
                r = results[label][n]
                print(
                    f"{n + 1:<6} {label:6} {r['rps']:>8.0f} {r['cpu_us']:>11.1f} "
                    f"{r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['failed']:>7.0f}"
                )
        for label in ("https", "mtls"):
            pairs = list(zip(results[label], results["plain"], strict=True))
            rates = [tls["rps"] / plain["rps"] for tls, plain in pairs]
            costs = [plain["cpu_us"] / tls["cpu_us"] for tls, plain in pairs]
            print(
                f"{label}/plain: req/s {', '.join(f'{r:.2f}' for r in rates)} (median {statistics.median(rates):.2f}); "
                f"per CPU second {', '.join(f'{c:.2f}' for c in costs)} (median {statistics.median(costs):.2f})"
            )
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
