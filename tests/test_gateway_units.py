"""The gateway's parts on their own: HTTP framing, routes, the prefix index, the AI-aware strategy,
the balancer's retry plan as the gateway drives it, prompts and scraped metrics."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
import uvloop

from swarm_discovery.balance import (
    AiAware,
    AiSettings,
    BalancerCore,
    Endpoint,
    EndpointSet,
    Outcome,
    PickRequest,
    Signals,
)
from swarm_discovery.balance.prefix import PrefixIndex
from swarm_discovery.gateway.backend import Admission
from swarm_discovery.gateway.errors import GatewayError
from swarm_discovery.gateway.models import parse, prompt_key
from swarm_discovery.gateway.registry import Backoff
from swarm_discovery.gateway.scrape import parse_metrics
from swarm_discovery.gateway.settings import RoutesError, load_routes
from swarm_discovery.gateway.upstream import Connection, UpstreamError
from swarm_discovery.gateway.wire import BadResponse, Chunked, parse_head, request_head
from swarm_discovery.records import InstanceView
from tests.fakes import FakeClock

# --- HTTP framing ------------------------------------------------------------------------------


def test_a_response_head_keeps_end_to_end_fields_and_says_how_the_body_ends() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nKeep-Alive: timeout=5",
        bodiless=False,
    )
    assert (head.status, head.length, head.chunked, head.keep_alive) == (200, 5, False, True)
    assert head.fields == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    chunked = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9", False)
    assert chunked.chunked and chunked.length is None and chunked.keep_alive
    until_close = parse_head(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain", False)
    assert until_close.length is None and not until_close.keep_alive
    closing = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close", False)
    assert not closing.keep_alive
    head_request = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 123", bodiless=True)
    assert head_request.length == 0 and head_request.get("content-length") == "123"
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10", False).length == 0


@pytest.mark.parametrize(
    "head",
    [
        b"SPDY/3 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nBad Name: x",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded",
        b"HTTP/1.1 200 OK\r\nno colon",
    ],
)
def test_a_malformed_response_head_is_refused(head: bytes) -> None:
    with pytest.raises(BadResponse):
        parse_head(head, bodiless=False)


def test_chunked_bodies_come_out_whatever_pieces_they_arrive_in() -> None:
    wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    for size in (1, 3, len(wire)):
        decoder, buffer, out = Chunked(), bytearray(), []
        for start in range(0, len(wire), size):
            buffer += wire[start : start + size]
            out.append(decoder.feed(buffer))
        assert b"".join(out) == b"hello world" and decoder.done and not buffer
    with pytest.raises(BadResponse):
        Chunked().feed(bytearray(b"zz\r\n"))
    with pytest.raises(BadResponse):
        Chunked().feed(bytearray(b"1\r\nab\r\n"))


def test_a_request_head_drops_hop_by_hop_fields_and_those_connection_names() -> None:
    fields = [
        (b"Host", b"gateway"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Authorization", b"Bearer t"),
    ]
    head = request_head("POST", "/v1/x?a=1", "10.0.0.2:80", fields, [b"X-Forwarded-For: 10.0.0.1, 1.2.3.4\r\n"])
    assert head == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: 10.0.0.2:80\r\nAuthorization: Bearer t\r\n"
        b"X-Forwarded-For: 10.0.0.1, 1.2.3.4\r\n\r\n"
    )


# --- routes ------------------------------------------------------------------------------------


def test_routes_lay_the_file_over_the_flags(tmp_path: Path) -> None:
    file = tmp_path / "routes.toml"
    file.write_text(
        'timeout = "5s"\nbody_limit = "1MiB"\n[services.web]\nstrategy = "round_robin"\ntags = ["v2"]\n'
        '[models]\nservices = ["llm"]\nscrape = "/metrics"\n[models.ai]\nprefix_weight = 5.0\n'
    )
    routes = load_routes(file, {"attempts": 2, "timeout": "1s", "strategy": "weighted"})
    assert routes.defaults.attempts == 2 and routes.defaults.timeout == 5.0 and routes.defaults.strategy == "weighted"
    web = routes.for_service("web")
    assert web.strategy == "round_robin" and web.body_limit == 1 << 20 and web.watch_selector == '"v2" in instance.tags'
    assert routes.for_service("other") is routes.defaults
    models = routes.models
    assert (models.strategy, models.retry, models.services, models.scrape) == ("ai_aware", "all", ("llm",), "/metrics")
    assert models.ai.prefix_weight == 5.0 and models.timeout == 5.0
    json_file = tmp_path / "routes.json"
    json_file.write_text(json.dumps({"services": {"web": {"selector": "instance.weight > 1", "tags": ["a"]}}}))
    selector = load_routes(json_file, {}).for_service("web").watch_selector
    assert selector == '"a" in instance.tags && (instance.weight > 1)'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("attempts = 0", "r.toml: attempts: expected int >= 1"),
        ('timeout = "soon"', "r.toml: timeout: 'soon' is not a duration"),
        ('body_limit = "lots"', "r.toml: body_limit: 'lots' is not a size"),
        ("[services.web]\nstrategy = 'fastest'", "r.toml: services.web.strategy: one of round_robin"),
        ("[services.web]\nspeed = 1", "r.toml: services.web.speed: unknown field"),
        ("[models.ai]\nweight = 1", "r.toml: models.ai.weight: unknown field"),
        ("[services.'bad name']", "r.toml: services: 'bad name' is not a service name"),
        ("[models]\nscrape = 'metrics'", "r.toml: models.scrape: a path starting with /"),
        ("x = [", "r.toml: "),
    ],
)
def test_a_wrong_routes_file_names_the_field(tmp_path: Path, text: str, error: str) -> None:
    file = tmp_path / "r.toml"
    file.write_text(text)
    with pytest.raises(RoutesError) as caught:
        load_routes(file, {})
    assert caught.value.message.replace(str(tmp_path) + "/", "").startswith(error)


# --- the prefix index and the AI-aware strategy ------------------------------------------------------


def test_the_prefix_index_matches_leading_blocks_and_stays_bounded() -> None:
    index = PrefixIndex(block_chars=4, max_blocks=8, capacity=10, per_block=2)
    assert index.hashes("abc") == [] and len(index.hashes("x" * 100)) == 8
    system = index.hashes("SYS1SYS2SYS3")
    index.record(system, "a")
    index.record(index.hashes("SYS1SYS2OTHR"), "b")
    assert index.matched(index.hashes("SYS1SYS2SYS3USER"), ["a", "b", "c"]) == {"a": 3, "b": 2}
    assert index.matched(index.hashes("NOPE"), ["a"]) == {}
    for i in range(50):
        index.record(index.hashes(f"{i:04d}"), "c")
    assert len(index) <= 10
    index.record(system, "a")
    index.forget({"b"})
    assert index.matched(system, ["a", "b"]) == {}


def _view(*endpoints: Endpoint) -> EndpointSet:
    return EndpointSet(list(endpoints))


def test_ai_aware_sends_a_shared_prefix_back_where_it_went() -> None:
    strategy = AiAware(AiSettings(block_chars=8), rand=random.Random(1).random)
    view = _view(*(Endpoint(f"e{i}", "10.0.0.1", 8000 + i) for i in range(4)))
    system = "You are a helpful assistant. " * 20
    first = strategy.pick(view, PickRequest(key=system + "user one"))
    assert first is not None
    again = {strategy.pick(view, PickRequest(key=system + f"user {i}")).id for i in range(10)}  # type: ignore[union-attr]
    assert again == {first.id}
    others = {strategy.pick(view, PickRequest(key=f"{i} " * 40)).id for i in range(40)}  # type: ignore[union-attr]
    assert len(others) >= 3  # with nothing shared, ties spread


def test_ai_aware_leaves_a_loaded_prefix_holder_and_refuses_when_all_are_saturated() -> None:
    clock = FakeClock()
    signals: dict[str, Signals] = {}
    strategy = AiAware(AiSettings(block_chars=8, imbalance=4, max_waiting=10), signals, clock)
    a, b = Endpoint("a", "10.0.0.1", 1), Endpoint("b", "10.0.0.1", 2)
    view = _view(a, b)
    prompt = "shared prefix " * 30
    holder = strategy.pick(view, PickRequest(key=prompt))
    assert holder is not None
    other = b if holder is a else a
    signals[f"{holder.address}:{holder.port}"] = Signals(running=2, at=clock())
    assert strategy.pick(view, PickRequest(key=prompt)) is holder  # busier, but within the imbalance: affinity
    signals[f"{holder.address}:{holder.port}"] = Signals(running=8, at=clock())
    assert strategy.pick(view, PickRequest(key=prompt)) is other  # 8 beyond the other: imbalanced
    for endpoint in (a, b):
        signals[f"{endpoint.address}:{endpoint.port}"] = Signals(waiting=10, at=clock())
    assert strategy.pick(view, PickRequest(key=prompt)) is None


def test_ai_aware_counts_stale_metrics_as_busy_and_its_own_requests_as_load() -> None:
    clock = FakeClock()
    signals: dict[str, Signals] = {}
    strategy = AiAware(AiSettings(stale_after=2.0), signals, clock)
    a = Endpoint("a", "10.0.0.1", 1)
    b = Endpoint("b", "10.0.0.1", 2, metrics={"kv_cache_usage": 0.5})
    view = _view(a, b)
    signals["10.0.0.1:1"] = Signals(at=clock())  # idle, as read now
    clock.advance(5)  # ... and never read again: stale
    assert all(strategy.pick(view).id == "b" for _ in range(20))  # type: ignore[union-attr]
    del signals["10.0.0.1:1"]
    for _ in range(12):
        view.load.started(b)  # this gateway's own requests in flight, in no report yet
    assert all(strategy.pick(view).id == "a" for _ in range(20))  # type: ignore[union-attr]
    saturated = Endpoint("s", "10.0.0.1", 3, max_concurrency=2)
    lone = _view(saturated)
    for _ in range(2 + 32):
        lone.load.started(saturated)
    assert strategy.pick(lone) is None


# --- the balancer's retry plan, as the gateway drives it -----------------------------------------


def _core(**options: object) -> BalancerCore:
    core = BalancerCore("svc", strategy="round_robin", **options)  # type: ignore[arg-type]
    core.update(
        [
            InstanceView(
                id=f"i{n}", address="10.0.0.1", port=n, status="passing", index=n, registered_at=0, updated_at=0
            )
            for n in (1, 2, 3)
        ]
    )
    return core


def _tries(core: BalancerCore, method: str, outcomes: list[Outcome], idempotent: bool | None = None) -> int:
    flow = core.attempts_for(method, None, idempotent)
    next(flow)
    tries = 1
    for outcome in outcomes:
        try:
            flow.send(outcome)
        except StopIteration:
            return tries
        tries += 1
    return tries


def test_what_never_reached_an_instance_is_retried_whatever_the_method() -> None:
    core = _core()
    assert _tries(core, "POST", [Outcome(sent=False), Outcome(status=200)]) == 2
    assert _tries(core, "POST", [Outcome(), Outcome(status=200)]) == 1  # sent, and not idempotent
    assert _tries(core, "POST", [Outcome(), Outcome(status=200)], idempotent=True) == 2
    assert _tries(core, "GET", [Outcome(final=True)]) == 1  # the runner cannot retry it


def test_only_the_statuses_named_are_retried() -> None:
    core = _core(retry_statuses={502, 503, 504})
    assert _tries(core, "GET", [Outcome(status=503), Outcome(status=200)]) == 2
    assert _tries(core, "GET", [Outcome(status=500)]) == 1
    assert core.counts["failures"] == 2  # a 500 is still a failure for outlier detection
    assert _tries(_core(), "GET", [Outcome(status=500), Outcome(status=200)]) == 2  # the SDK's default


# --- the OpenAI-style bodies, and scraped metrics ---------------------------------------------------


def test_an_upstream_wait_times_out_at_its_own_deadline_with_one_timer_a_connection() -> None:
    """One wait answered long before its deadline (the connection's timer is set for it), then each
    later one times out at its own deadline, sooner than the timer's or not."""

    async def answered_then_waits() -> list[float]:
        loop = asyncio.get_running_loop()
        conn = Connection(("127.0.0.1", 1), loop)
        loop.call_later(0.02, conn.data_received, b"HTTP/1.1 204 No Content\r\n\r\n")
        assert (await conn.head(loop.time() + 10.0, bodiless=False)).status == 204
        conn.reset()
        taken = []
        for deadline in (0.05, 0.1, 0.03):
            started = loop.time()
            with pytest.raises(UpstreamError, match="no answer in time"):
                await conn.head(started + deadline, bodiless=False)
            taken.append(loop.time() - started)
        return taken

    for deadline, taken in zip((0.05, 0.1, 0.03), uvloop.run(answered_then_waits()), strict=True):
        assert deadline - 0.002 <= taken < deadline + 0.05


def test_a_wait_for_room_that_times_out_is_false_never_a_cancellation() -> None:
    """uvloop fires a timer up to a millisecond before loop.time() reaches it: the deadline's
    answer must not look like the client going away (which ended the connection unanswered)."""

    async def waits() -> list[object]:
        admission = Admission(64, 1.0)
        loop = asyncio.get_running_loop()

        async def one(delay: float) -> object:
            try:
                return await admission.wait(loop.time() + delay)
            except asyncio.CancelledError:
                return "cancelled"

        woken = asyncio.ensure_future(one(5.0))
        answers = await asyncio.gather(*[one(0.001 * (n % 17) + 0.0003 * n) for n in range(60)])
        admission.wake()
        return [*answers, await woken]

    assert uvloop.run(waits()) == [False] * 60 + [True]


def test_the_prompt_key_is_the_text_in_order_and_bounded() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
        ],
    }
    assert prompt_key(chat, 1000) == "system:Be brief.user:Hi"
    assert prompt_key(chat, 10) == "system:Be "
    assert prompt_key({"model": "m", "prompt": ["a", "b"]}, 100) == "ab"
    assert prompt_key({"model": "m", "input": "text"}, 100) == "text"
    assert prompt_key({"model": "m"}, 100) is None
    assert parse(b'{"model": "m", "stream": true}')["stream"] is True
    for body, field in ((b"[1]", "body"), (b"{", "body"), (b'{"model": 3}', "model"), (b"{}", "model")):
        with pytest.raises(GatewayError) as caught:
            parse(body)
        assert caught.value.status_code == 400 and caught.value.message.startswith(field)


def test_vllm_metrics_are_read_and_summed_over_label_sets() -> None:
    text = (
        b"# HELP vllm:num_requests_waiting Waiting\n"
        b'vllm:num_requests_waiting{model_name="a"} 3.0\n'
        b'vllm:num_requests_waiting{model_name="b"} 2\n'
        b"vllm:num_requests_running 4\n"
        b'vllm:gpu_cache_usage_perc{model_name="a"} 0.25\n'
        b"vllm:other 9\n"
        b'vllm:num_requests_running{x="}"} nonsense\n'
    )
    assert parse_metrics(text) == {"waiting": 5.0, "running": 4.0, "kv": 0.25}


def test_a_registry_never_read_is_not_said_to_leave_a_view(caplog: pytest.LogCaptureFixture) -> None:
    status = Backoff("following the catalog")
    status.failed(ConnectionRefusedError("cannot reach 127.0.0.1:1"))
    assert caplog.messages[-1] == "following the catalog: cannot reach 127.0.0.1:1; nothing read yet, trying again"
    status.answered()
    status.failed(ConnectionRefusedError("gone"))
    assert caplog.messages[-1] == "following the catalog: gone; serving the last view"
