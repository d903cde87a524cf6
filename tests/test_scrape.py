"""ScrapeProber against real HTTP servers on loopback serving vLLM's /metrics text: what becomes
metrics, and every way a scrape fails."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_discovery.health.check import CheckRuntime, ProbeResult
from swarm_discovery.health.scrape import MAX_SCRAPE_BYTES, MAX_SCRAPE_SERIES, ScrapeProber, cel_name
from swarm_discovery.health.targets import TargetPolicy
from swarm_discovery.records import MAX_METRICS, CheckSpec
from tests.backends import BlackHole, Quiet, Served, self_signed
from tests.server import free_port

MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'
BUCKETS = ("0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "1.0", "2.5", "+Inf")


def histogram(name: str, count: int, total: float) -> str:
    lines = [f"# HELP {name} Histogram of {name}.", f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{le}",{MODEL}}} {count}.0' for le in BUCKETS]
    lines += [f"{name}_count{{{MODEL}}} {count}.0", f"{name}_sum{{{MODEL}}} {total}"]
    # prometheus_client writes a `_created` as a gauge of its own in this format.
    lines += [f"# HELP {name}_created Histogram of {name}.", f"# TYPE {name}_created gauge"]
    lines.append(f"{name}_created{{{MODEL}}} 1.7330192e+09")
    return "\n".join(lines) + "\n"


# What a vLLM 0.6 server's /metrics answers (prometheus_client's text format 0.0.4), abridged:
# several label sets, histograms, `_created` series, NaN and +Inf.
VLLM = (
    "# HELP python_gc_objects_collected_total Objects collected during gc\n"
    "# TYPE python_gc_objects_collected_total counter\n"
    'python_gc_objects_collected_total{generation="0"} 10385.0\n'
    'python_gc_objects_collected_total{generation="1"} 2214.0\n'
    'python_gc_objects_collected_total{generation="2"} 101.0\n'
    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
    "# TYPE process_resident_memory_bytes gauge\n"
    "process_resident_memory_bytes 4.123545e+09\n"
    "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
    "# TYPE vllm:cache_config_info gauge\n"
    'vllm:cache_config_info{block_size="16",cache_dtype="auto",gpu_memory_utilization="0.9"} 1.0\n'
    "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    f"vllm:num_requests_running{{{MODEL}}} 7.0\n"
    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    f"vllm:num_requests_waiting{{{MODEL}}} 3.0\n"
    "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
    "# TYPE vllm:gpu_cache_usage_perc gauge\n"
    f"vllm:gpu_cache_usage_perc{{{MODEL}}} 0.4375\n"
    "# HELP vllm:gpu_prefix_cache_hit_rate GPU prefix cache block hit rate.\n"
    "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\n"
    f"vllm:gpu_prefix_cache_hit_rate{{{MODEL}}} NaN\n"
    "# HELP vllm:spec_decode_efficiency Speculative decoding system efficiency.\n"
    "# TYPE vllm:spec_decode_efficiency gauge\n"
    f"vllm:spec_decode_efficiency{{{MODEL}}} +Inf\n"
    "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
    "# TYPE vllm:prompt_tokens_total counter\n"
    f"vllm:prompt_tokens_total{{{MODEL}}} 183920.0\n"
    "# HELP vllm:prompt_tokens_created Number of prefill tokens processed.\n"
    "# TYPE vllm:prompt_tokens_created gauge\n"
    f"vllm:prompt_tokens_created{{{MODEL}}} 1.7330192e+09\n"
    + histogram("vllm:time_to_first_token_seconds", 120, 9.25)
    + "# HELP vllm:request_success_total Count of successfully processed requests.\n"
    "# TYPE vllm:request_success_total counter\n"
    f'vllm:request_success_total{{finished_reason="stop",{MODEL}}} 100.0\n'
    f'vllm:request_success_total{{finished_reason="length",{MODEL}}} 19.0\n'
    "# HELP vllm:request_success_created Count of successfully processed requests.\n"
    "# TYPE vllm:request_success_created gauge\n"
    f'vllm:request_success_created{{finished_reason="stop",{MODEL}}} 1.7330192e+09\n'
    f'vllm:request_success_created{{finished_reason="length",{MODEL}}} 1.7330192e+09\n'
    + histogram("vllm:e2e_request_latency_seconds", 119, 512.5)
)
VLLM_METRICS = {
    "python_gc_objects_collected_total": 12700.0,
    "process_resident_memory_bytes": 4.123545e09,
    "vllm_cache_config_info": 1.0,
    "vllm_num_requests_running": 7.0,
    "vllm_num_requests_waiting": 3.0,
    "vllm_gpu_cache_usage_perc": 0.4375,
    "vllm_prompt_tokens_total": 183920.0,
    "vllm_time_to_first_token_seconds_count": 120.0,
    "vllm_time_to_first_token_seconds_sum": 9.25,
    "vllm_request_success_total": 119.0,
    "vllm_e2e_request_latency_seconds_count": 119.0,
    "vllm_e2e_request_latency_seconds_sum": 512.5,
}


class MetricsServer(Served):
    """Answers every GET with `status`, `body` and `content_type`, with a Content-Length unless
    `chunked` (then the body ends with the connection); keeps the last request's headers."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.status = 200
        self.body = VLLM.encode()
        self.content_type = "text/plain; version=0.0.4; charset=utf-8"
        self.chunked = False
        self.encoding: str | None = None
        self.hits = 0
        self.headers: dict[str, str] = {}
        server = self

        class Handler(Quiet):
            def do_GET(self) -> None:
                server.hits += 1
                server.headers = dict(self.headers)
                self.send_response(server.status)
                self.send_header("Content-Type", server.content_type)
                if server.encoding is not None:
                    self.send_header("Content-Encoding", server.encoding)
                if server.chunked:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        super().__init__(Handler, tls)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/metrics"


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    served = MetricsServer()
    yield served
    served.stop()


@pytest.fixture
def metrics(server: MetricsServer) -> Iterator[MetricsServer]:
    """The module's server, answering vLLM's text again after the test."""
    yield server
    server.status, server.body, server.chunked, server.encoding = 200, VLLM.encode(), False, None
    server.content_type = "text/plain; version=0.0.4; charset=utf-8"


def scrape(url: str, policy: TargetPolicy | None = None, **fields: object) -> ProbeResult:
    """One probe of a metric check scraping `url`, by a prober of its own."""

    async def run() -> ProbeResult:
        prober = ScrapeProber(policy or TargetPolicy(), 4)
        spec = CheckSpec(type="metric", scrape=url, **fields)  # type: ignore[arg-type]
        try:
            return await prober.probe(CheckRuntime(spec, 0, now=0.0))
        finally:
            await prober.close()

    return asyncio.run(run())


def test_vllm_metrics_are_sanitized_summed_and_cut_down(metrics: MetricsServer) -> None:
    result = scrape(metrics.url, headers={"Authorization": "Bearer t0ken"})
    assert result.status == "passing"
    assert result.metrics == VLLM_METRICS
    assert list(result.metrics) == list(VLLM_METRICS)  # in exposition order
    # Summed label sets count once per series; buckets, _created, NaN and +Inf are not read.
    assert result.output == f"scraped 15 series from {metrics.url}"
    assert metrics.headers["Authorization"] == "Bearer t0ken"
    assert metrics.headers["Accept-Encoding"] == "identity"
    assert "openmetrics" not in metrics.headers["Accept"]  # else prometheus_client answers OpenMetrics


def test_openmetrics_text_is_read_when_served(metrics: MetricsServer) -> None:
    metrics.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    metrics.body = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{MODEL}}} 2.0\n"
        "# TYPE vllm:prompt_tokens counter\n"
        f"vllm:prompt_tokens_total{{{MODEL}}} 50.0\n"
        f"vllm:prompt_tokens_created{{{MODEL}}} 1.7330192e+09\n"
        "# TYPE vllm:time_to_first_token_seconds histogram\n"
        f'vllm:time_to_first_token_seconds_bucket{{le="0.1",{MODEL}}} 3\n'
        f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",{MODEL}}} 4\n'
        f"vllm:time_to_first_token_seconds_count{{{MODEL}}} 4\n"
        f"vllm:time_to_first_token_seconds_sum{{{MODEL}}} 0.5\n"
        f"vllm:time_to_first_token_seconds_created{{{MODEL}}} 1.7330192e+09\n"
        "# EOF\n"
    ).encode()
    result = scrape(metrics.url)
    assert result.status == "passing", result.output
    assert result.metrics == {
        "vllm_num_requests_waiting": 2.0,
        "vllm_prompt_tokens_total": 50.0,
        "vllm_time_to_first_token_seconds_count": 4.0,
        "vllm_time_to_first_token_seconds_sum": 0.5,
    }
    metrics.body = metrics.body.replace(b"# EOF\n", b"")
    assert scrape(metrics.url).output.startswith(f"scrape {metrics.url}: not Prometheus text: 'Missing # EOF")


def test_only_the_first_64_names_are_kept(metrics: MetricsServer) -> None:
    metrics.body = "".join(f'gauge_{i}{{shard="a"}} {i}\ngauge_{i}{{shard="b"}} 1\n' for i in range(70)).encode()
    result = scrape(metrics.url)
    assert result.metrics == {f"gauge_{i}": i + 1.0 for i in range(MAX_METRICS)}
    assert result.output == f"scraped 140 series from {metrics.url}; 6 more metrics dropped, past the first 64"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "until-closed"])
def test_a_body_over_512_kib_is_refused(metrics: MetricsServer, chunked: bool) -> None:
    metrics.chunked = chunked
    metrics.body = b"# " + b"x" * MAX_SCRAPE_BYTES + b"\nup 1\n"
    result = scrape(metrics.url)
    assert (result.status, result.metrics) == ("critical", None)
    assert result.output == f"scrape {metrics.url}: larger than 512 KiB"
    metrics.body = metrics.body[: MAX_SCRAPE_BYTES - 6] + b"\nup 1\n"  # exactly at the bound: read
    assert scrape(metrics.url).metrics == {"up": 1.0}


def test_too_many_series_are_refused(metrics: MetricsServer) -> None:
    metrics.body = "".join(f"s{i} 1\n" for i in range(MAX_SCRAPE_SERIES + 1)).encode()
    result = scrape(metrics.url)
    assert (result.status, result.metrics) == ("critical", None)
    assert result.output == f"scrape {metrics.url}: longer than 10000 lines"
    metrics.body = "".join(f"s{i} 1\n" for i in range(MAX_SCRAPE_SERIES)).encode()
    assert (
        scrape(metrics.url).output
        == f"scraped 10000 series from {metrics.url}; 9936 more metrics dropped, past the first 64"
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<!DOCTYPE html><html><body>Not here</body></html>\n", "not Prometheus text: 'invalid metric name:<!DOCTYPE"),
        (b'{"status": "ok"}', "not Prometheus text: 'Invalid labels"),
        (b"vllm:num_requests_waiting three\n", "not Prometheus text: \"could not convert string to float: 'three'\""),
        (b"up \xff\xfe 1\n", "not UTF-8 text"),
    ],
    ids=["html", "json", "word", "binary"],
)
def test_what_is_not_prometheus_text_is_refused(metrics: MetricsServer, body: bytes, why: str) -> None:
    metrics.body = body
    result = scrape(metrics.url)
    assert (result.status, result.metrics) == ("critical", None)
    assert result.output.startswith(f"scrape {metrics.url}: {why}")


def test_an_answer_other_than_2xx_fails(metrics: MetricsServer) -> None:
    metrics.status = 503
    result = scrape(metrics.url)
    assert (result.status, result.output, result.metrics) == (
        "critical",
        f"scrape {metrics.url}: 503 Service Unavailable",
        None,
    )


def test_a_compressed_answer_is_refused(metrics: MetricsServer) -> None:
    metrics.encoding, metrics.body = "gzip", gzip.compress(VLLM.encode())
    result = scrape(metrics.url)
    assert result.output == f"scrape {metrics.url}: compressed (gzip), though asked for identity"


def test_a_closed_port_fails() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = scrape(url)
    assert result.status == "critical" and result.output.startswith(f"scrape {url}: ClientConnectorError: ")


def test_a_server_that_never_answers_times_out() -> None:
    hole = BlackHole()
    try:
        result = scrape(hole.urls[0], timeout="300ms")
    finally:
        hole.stop()
    assert (result.status, result.output) == ("critical", f"scrape {hole.urls[0]}: timed out after 300ms")
    assert 0.3 <= result.duration < 2.0


def test_https_is_verified_unless_the_check_skips_it(tmp_path: Path) -> None:
    server = MetricsServer(tls=self_signed(tmp_path))
    try:
        verified = scrape(server.url)
        trusted = scrape(server.url, tls_skip_verify=True)
    finally:
        server.stop()
    assert verified.status == "critical" and "certificate" in verified.output.lower()
    assert trusted.metrics == VLLM_METRICS


def test_a_denied_target_is_not_scraped(metrics: MetricsServer) -> None:
    hits = metrics.hits
    deny = TargetPolicy(deny=["loopback"])
    by_address = scrape(metrics.url, deny)
    by_name = scrape(f"http://localhost:{metrics.port}/metrics", deny)
    assert by_address.output == f"scrape {metrics.url}: target denied by --probe-deny 127.0.0.0/8: 127.0.0.1"
    assert by_name.status == "critical" and ": target denied by --probe-deny " in by_name.output
    assert metrics.hits == hits  # nothing was sent


def test_names_become_cel_identifiers(metrics: MetricsServer) -> None:
    assert cel_name("vllm:num_requests_waiting") == "vllm_num_requests_waiting"
    assert cel_name("1st.metric-name") == "_1st_metric_name"
    assert cel_name("a" * 200) == "a" * 128
    metrics.body = (
        b'{"my.metric", shard="a"} 1\n# TYPE "my.hist" histogram\n{"my.hist_bucket", le="1"} 2\n{"my.hist_sum"} 3\n'
        b"vllm:x 1\nvllm_x 2\n"  # one name once sanitized
    )
    assert scrape(metrics.url).metrics == {"my_metric": 1.0, "my_hist_sum": 3.0, "vllm_x": 3.0}
