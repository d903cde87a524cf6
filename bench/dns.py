"""DNS queries/s: our DNS front vs dnsmasq answering the same records, with dnsperf as the load.

Both hold the service `llm` (three instances) and its SRV records; the queries alternate A for
`llm.service.swarm` and SRV for `_llm._tcp.service.swarm` (whose answers carry the targets' A
records in the additional section). The server under test, ours or dnsmasq, is pinned to core 0
and dnsperf to core 1 (bench.common), and each round runs one and then the other, so the ratio is
measured at one machine speed.

    python -m bench.dns [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import dns.exception
import dns.message
import dns.query
from tests.server import Server, free_dns_port

from bench.common import LOAD_CPU, SERVER_CPU, alternate, round_arguments

ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
QUERIES = "llm.service.swarm A\n_llm._tcp.service.swarm SRV\n"


def target(address: str) -> str:
    return "".join(f"{int(part):02x}" for part in address.split(".")) + ".addr.swarm"


class Dnsmasq:
    """dnsmasq answering the same names from its own records, nothing forwarded."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-dnsmasq-"))
        self.dir.chmod(0o755)
        hosts = self.dir / "hosts"
        hosts.write_text("".join(f"{a} llm.service.swarm\n{a} {target(a)}\n" for a in ADDRESSES))
        hosts.chmod(0o644)
        self.port = free_dns_port()
        srv = [f"--srv-host=_llm._tcp.service.swarm,{target(a)},{8000 + i},1,100" for i, a in enumerate(ADDRESSES)]
        command = ["taskset", "-c", SERVER_CPU, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"]
        options = ["--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--local=/swarm/", "--no-negcache"]
        where = ["--pid-file=", "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}"]
        self.process = subprocess.Popen(
            [*command, *options, *where, *srv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def answered(port: int) -> bool:
    query = dns.message.make_query("llm.service.swarm", "A")
    try:
        return len(dns.query.udp(query, "127.0.0.1", port=port, timeout=1).answer) == 1
    except (OSError, dns.exception.Timeout):
        return False


def dnsperf(port: int, seconds: int, queries: Path) -> dict[str, float]:
    command = ["taskset", "-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries)]
    out = subprocess.run([*command, "-l", str(seconds), "-c", "4", "-q", "200"], capture_output=True, text=True).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if qps is None or lost is None:
        raise RuntimeError(f"dnsperf said: {out}")
    return {"qps": float(qps.group(1)), "lost": float(lost.group(1))}


def main() -> None:
    args = round_arguments(__doc__)
    port = free_dns_port()
    server = Server(
        Path(tempfile.mkdtemp(prefix="swarm-bench-")) / "data", cpus=SERVER_CPU, args=("--dns", f"127.0.0.1:{port}")
    )
    server.start()
    dnsmasq = Dnsmasq()
    try:
        for i, address in enumerate(ADDRESSES):
            body = {"address": address, "port": 8000 + i}
            server.http.put(f"/v1/services/llm/instances/llm-{i}", json=body).raise_for_status()
        if not answered(port) or not answered(dnsmasq.port):
            raise RuntimeError("a DNS server does not answer llm.service.swarm")
        queries = Path(tempfile.mkstemp(suffix=".txt")[1])
        queries.write_text(QUERIES)
        results = alternate(
            args.rounds,
            {
                "swarm": lambda: dnsperf(port, args.seconds, queries),
                "dnsmasq": lambda: dnsperf(dnsmasq.port, args.seconds, queries),
            },
        )
    finally:
        dnsmasq.stop()
        server.stop()
    print(
        f"dnsperf -c 4 -q 200 -l {args.seconds}; {args.rounds} rounds;"
        " A llm.service.swarm and SRV _llm._tcp.service.swarm (3 instances)"
    )
    print(f"{'round':6} {'swarm q/s':>10} {'dnsmasq q/s':>12} {'ratio':>6} {'lost':>6}")
    ratios = []
    for n in range(args.rounds):
        ours, theirs = results["swarm"][n], results["dnsmasq"][n]
        ratios.append(ours["qps"] / theirs["qps"])
        lost = ours["lost"] + theirs["lost"]
        print(f"{n + 1:<6} {ours['qps']:>10.0f} {theirs['qps']:>12.0f} {ratios[-1]:>6.2f} {lost:>6.0f}")
    print(f"median ratio, swarm / dnsmasq: {statistics.median(ratios):.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
