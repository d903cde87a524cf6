"""What access control costs: reads and registrations with --acl and a scoped token, beside a server without.

Both servers hold the same 100 instances of the service read (writes go to another one); each
round runs the same wrk load on one and then the other (pinned to core 0, wrk on core 1), so the
ratio is measured at one machine speed. Reads are a cached listing (the fast path, where a token
lookup is most of the extra work); writes are new registrations with the provider's token.

    python -m bench.acl [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import statistics

import httpx
from tests.server import Server

from bench.common import Wrk, alternate, load, round_arguments, start_server
from bench.writes import SCRIPT as WRITES

READS = r"""
request = function() return wrk.format("GET", "/v1/services/a-static?tag=vllm") end
"""


def with_token(script: str, token: str | None) -> str:
    """The script sending `token`: in wrk's default headers, and in a request's own (which replace them)."""
    if token is None:
        return script
    own = '{["Content-Type"] = "application/json"}'
    script = script.replace(own, own[:-1] + f', ["Authorization"] = "Bearer {token}"}}')
    return f'wrk.headers["Authorization"] = "Bearer {token}"\n' + script


def instance(i: int) -> tuple[str, str, dict[str, object]]:
    return "a-static", f"i{i}", {"address": f"10.0.{i // 256}.{i % 256}", "port": 8000, "tags": ["vllm"]}


def provider_token(server: Server) -> str:
    management = httpx.put(f"{server.url}/v1/acl/bootstrap").json()["token"]
    rules = {"services": {"a-": "write"}, "nodes": {"a-": "write"}, "reports": {"a-": "write"}}
    answer = httpx.post(
        f"{server.url}/v1/acl/tokens", json={"rules": rules}, headers={"Authorization": f"Bearer {management}"}
    )
    return str(answer.json()["token"])


def main() -> None:
    args = round_arguments(__doc__)
    plain = start_server()  # both without the write-rate limit: the load would be throttled, not measured
    guarded = start_server(args=("--acl",))
    try:
        token = provider_token(guarded)
        load(plain, 100, instance)
        guarded.http.headers["Authorization"] = f"Bearer {token}"
        for i in range(100):  # the loader speaks no tokens
            service, iid, body = instance(i)
            guarded.http.put(f"/v1/services/{service}/instances/{iid}", json=body).raise_for_status()
        wrk = Wrk(seconds=args.seconds)
        rounds = iter(range(2 * args.rounds))

        def writes(server: Server, token: str | None) -> dict[str, float]:
            script = WRITES.replace("ROUND", str(next(rounds))).replace("/v1/services/llm/", "/v1/services/a-llm/")
            return wrk.run(server.url, with_token(script, token))

        results = alternate(
            args.rounds,
            {
                "reads off": lambda: wrk.run(plain.url, READS),
                "reads on": lambda: wrk.run(guarded.url, with_token(READS, token)),
                "writes off": lambda: writes(plain, None),
                "writes on": lambda: writes(guarded, token),
            },
        )
    finally:
        plain.stop()
        guarded.stop()
    print(
        f"wrk -t1 -c64 -d{args.seconds}s; {args.rounds} rounds; reads: GET /v1/services/a-static?tag=vllm "
        "(100 instances, cached); writes: PUT of a new instance; --acl with a provider token"
    )
    print(
        f"{'round':6} {'reads off':>10} {'reads on':>10} {'ratio':>6} {'writes off':>11} {'writes on':>10} {'ratio':>6}"
    )
    read_ratios, write_ratios = [], []
    for n in range(args.rounds):
        ro, rn = results["reads off"][n], results["reads on"][n]
        wo, wn = results["writes off"][n], results["writes on"][n]
        assert rn["non2xx"] == 0 and wn["non2xx"] == 0, "the token was refused"
        read_ratios.append(rn["rps"] / ro["rps"])
        write_ratios.append(wn["rps"] / wo["rps"])
        print(
            f"{n + 1:<6} {ro['rps']:>10.0f} {rn['rps']:>10.0f} {read_ratios[-1]:>6.2f}"
            f" {wo['rps']:>11.0f} {wn['rps']:>10.0f} {write_ratios[-1]:>6.2f}"
        )
    print(
        f"median ratio, ACL on / off: reads {statistics.median(read_ratios):.2f} (target >= 0.8), "
        f"writes {statistics.median(write_ratios):.2f}"
    )


if __name__ == "__main__":
    main()
