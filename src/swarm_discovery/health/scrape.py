"""A metric check's scrape: a model server's own Prometheus endpoint (vLLM's `/metrics`), read as
the instance's metrics.

Each sample name becomes a metric that CEL field access can read (`vllm:num_requests_waiting` is
`vllm_num_requests_waiting`), its series summed over their label sets: queue lengths and counters
add up across them, and a vLLM server serves one model, so its gauges have one series each.
Histograms and summaries keep `_sum` and `_count`; their buckets and quantiles, and every
`_created` timestamp, are left out (no sum of them means anything). NaN and infinite samples are
dropped. The first MAX_METRICS names in exposition order are kept.

Bounded: at most MAX_SCRAPE_BYTES of body and MAX_SCRAPE_SERIES lines; more fails the probe, as
does any error, with one line saying why. Parsing is prometheus_client's, which is pure Python and
spends most of its time on label sets, so the lines left out are skipped before it sees them (a
vLLM endpoint's are mostly histogram buckets): 300 vLLM series parse in about a millisecond, on
the event loop; a body over MAX_INLINE_PARSE is parsed in a thread.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable

import aiohttp
from multidict import CIMultiDict
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from ..records import MAX_KEY, MAX_METRICS
from .check import CheckRuntime, ProbeResult
from .probes import HTTP_FAILURES, MAX_BODY, HttpProber, drained, elapsed, failure

MAX_SCRAPE_BYTES = 512 * 1024
MAX_SCRAPE_SERIES = 10_000  # lines of exposition (samples, HELP and TYPE), so bounded before parsing
MAX_INLINE_PARSE = 64 * 1024  # bytes parsed on the event loop (vLLM's are about 30 KiB, 1 ms)
# Classic text only: prometheus_client's servers answer OpenMetrics whenever it is accepted at all,
# and its OpenMetrics parser checks every bucket (about 9 ms for 300 vLLM series). Uncompressed,
# so that what is read is what is parsed, and the bound on it is one on the work.
_HEADERS = {"Accept": "text/plain;version=0.0.4;q=1.0,*/*;q=0.1", "Accept-Encoding": "identity"}
_NOT_CEL = re.compile(r"[^A-Za-z0-9_]")
_SAMPLE_NAME = re.compile(r"\s*([^\s{]+)")


class ScrapeError(ValueError):
    """An exposition past a bound; its message says which."""


class ScrapeProber(HttpProber):
    """Reads `check.spec.scrape` with HttpProber's request handling: pools fenced by the target
    policy, TLS verified as an http check's (the check's `tls_skip_verify` and `tls_server_name`, the
    prober's `ca_file`); the check's headers are sent, and its timeout covers the whole body."""

    async def probe(self, check: CheckRuntime) -> ProbeResult:
        url = check.spec.scrape or ""
        started = time.perf_counter()
        fetched = await self._fetch(check, url)
        if isinstance(fetched, str):
            return ProbeResult("critical", f"scrape {url}: {fetched}", elapsed(started))
        body, content_type = fetched
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return ProbeResult("critical", f"scrape {url}: not UTF-8 text", elapsed(started))
        openmetrics = content_type == "application/openmetrics-text"
        try:
            if len(body) <= MAX_INLINE_PARSE:
                metrics, series, dropped = parse_exposition(text, openmetrics)
            else:  # about 100 ms of parsing at the bounds: off the event loop, where every other probe waits
                metrics, series, dropped = await asyncio.to_thread(parse_exposition, text, openmetrics)
        except ScrapeError as exc:
            return ProbeResult("critical", f"scrape {url}: {exc}", elapsed(started))
        except ValueError as exc:  # all that prometheus_client's parsers raise
            return ProbeResult("critical", f"scrape {url}: not Prometheus text: {str(exc)[:200]!a}", elapsed(started))
        output = f"scraped {series} series from {url}"
        if dropped:
            output += f"; {dropped} more metrics dropped, past the first {MAX_METRICS}"
        return ProbeResult("passing", output, elapsed(started), metrics=metrics)

    async def _fetch(self, check: CheckRuntime, url: str) -> tuple[bytes, str] | str:
        """The body and its media type, or why there is none."""
        spec = check.spec
        session = self._session(verify=not spec.tls_skip_verify)
        headers = CIMultiDict(_HEADERS)
        headers.update(spec.headers)  # the check's own win, in any case
        try:
            await self.fence(check)
            async with session.get(
                url,
                headers=headers,
                server_hostname=spec.tls_server_name,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=check.timeout),
            ) as response:
                if not 200 <= response.status < 300:
                    if not await drained(response.content, MAX_BODY):
                        response.close()
                    return f"{response.status} {response.reason or ''}".rstrip()
                if response.headers.get("Content-Encoding", "identity") != "identity":
                    response.close()
                    return f"compressed ({response.headers['Content-Encoding']}), though asked for identity"
                body = await _read_at_most(response, MAX_SCRAPE_BYTES)
                if body is None:
                    response.close()  # the rest unread: drop the connection
                    return f"larger than {MAX_SCRAPE_BYTES // 1024} KiB"
                return body, response.content_type
        except HTTP_FAILURES as exc:
            return failure(exc, check.timeout)


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit` bytes (having read at most limit + 1)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    left = limit + 1
    while left > 0:
        chunk = await response.content.read(left)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        left -= len(chunk)
    return None


def parse_exposition(text: str, openmetrics: bool = False) -> tuple[dict[str, float], int, int]:
    """(metrics, series read, names dropped past MAX_METRICS) of a Prometheus text exposition, or
    of OpenMetrics text; ScrapeError when it is too long, ValueError when the parser refuses it."""
    lines = text.split("\n")
    if len(lines) > MAX_SCRAPE_SERIES + 1:  # the last line ends with a newline
        raise ScrapeError(f"longer than {MAX_SCRAPE_SERIES} lines")
    unwanted: set[str] = set()
    kept: list[str] = []
    for line in lines:
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) == 4 and parts[1] == "TYPE":
                unwanted.update(_unwanted(parts[2].strip('"'), parts[3].strip()))
        elif not openmetrics and (found := _SAMPLE_NAME.match(line)) is not None and found[1] in unwanted:
            continue
        kept.append(line)
    # The OpenMetrics parser checks that a histogram's buckets add up, so it must see them all.
    families: Iterable[Metric] = openmetrics_families(text) if openmetrics else text_families("\n".join(kept))
    sums: dict[str, float] = {}
    series = 0
    for family in families:
        for sample in family.samples:
            # Still tested here: a quoted name (`{"my.metric"}`) is not skipped before parsing.
            if sample.name in unwanted or not math.isfinite(sample.value):
                continue
            series += 1
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    metrics: dict[str, float] = {}
    dropped = 0
    for name, value in sums.items():
        key = cel_name(name)  # names that differ only in what CEL cannot read are one metric
        if key not in metrics and len(metrics) >= MAX_METRICS:
            dropped += 1
            continue
        total = metrics.get(key, 0.0) + value
        if math.isfinite(total):  # finite samples can still add up past the largest float
            metrics[key] = total
    return metrics, series, dropped


def _unwanted(name: str, kind: str) -> tuple[str, ...]:
    """The sample names of a family of `kind` that no metric keeps."""
    if kind == "counter":
        return (name.removesuffix("_total") + "_created",)
    if kind == "histogram":
        return (name + "_bucket", name + "_created")
    if kind == "gaugehistogram":
        return (name + "_bucket",)
    if kind == "summary":
        return (name, name + "_created")  # a summary's samples named as it are its quantiles
    return ()


def cel_name(name: str) -> str:
    """`name` as a CEL identifier: every other character an underscore, no leading digit, at most
    MAX_KEY characters."""
    key = _NOT_CEL.sub("_", name)
    return ("_" + key if key[:1].isdigit() else key)[:MAX_KEY]
