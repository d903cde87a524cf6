"""The gateway's request handler: which backend a request goes to, and the gateway's own paths.

In this order:

- `Host: SERVICE.swarm`: the whole request, path and all, goes to SERVICE;
- `/metrics` (Prometheus), `/-/status` (the view, as JSON) and `/-/healthz`: the gateway's own;
- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` route by the body's `model`;
  `GET /v1/models` lists the models served (OpenAI's shapes, errors included);
- `/SERVICE/PATH...` goes to SERVICE as `/PATH...` (query included).

When every candidate of a backend is saturated (the AI-aware strategy says so), the request waits
in the backend's admission queue and tries again, or is refused with 429 and `Retry-After`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..balance import NoInstance, Signals
from .backend import Backend
from .errors import GatewayError
from .fleet import Fleet
from .front import Front, Request, Response
from .metrics import GatewayMetrics
from .models import MODEL_PATHS, listing, parse, prompt_key
from .proxy import Body, Proxy, read_body
from .registry import RegistryClient
from .reports import Reporter
from .scrape import Scraper
from .settings import SERVICE_NAME, Routes
from .upstream import Upstreams

SWEEP_EVERY = 5.0
STOP_WITHIN = 3.0
_JSON = [("Content-Type", "application/json")]
_METRICS = [("Content-Type", CONTENT_TYPE_LATEST)]
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
_encode = msgspec.json.Encoder().encode
Bound = tuple[Backend, str, Body, str | None]  # where a request goes: backend, target, body, key


class Gateway:
    def __init__(
        self, routes: Routes, client: RegistryClient, max_services: int = 512, max_in_flight: int = 4096
    ) -> None:
        self.routes = routes
        self.client = client
        self.max_in_flight = max_in_flight
        self.signals: dict[str, Signals] = {}
        self.fleet = Fleet(client, routes, self.signals, max_services)
        self.upstreams = Upstreams()
        self.metrics = GatewayMetrics(self.fleet.state)
        self.proxy = Proxy(self.upstreams, self.metrics)
        self.reporter = Reporter(client, self.fleet.all_backends)
        models = routes.models
        self.scraper = (
            Scraper(
                self.upstreams,
                models.scrape,
                models.scrape_every,
                models.connect_timeout,
                self.signals,
                self._model_servers,
                self._scraped,
            )
            if models.scrape is not None
            else None
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        await self.fleet.start()
        self.reporter.start()
        if self.scraper is not None:
            self.scraper.start()
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.scraper is not None:
            await self.scraper.stop()
        await self.reporter.stop()
        await self.fleet.stop()
        self.upstreams.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            self.upstreams.sweep()

    def _model_servers(self) -> set[tuple[str, int]]:
        return {(i.address, i.port) for instances in self.fleet.models.values() for i in instances}

    def _scraped(self) -> None:
        for backend in self.fleet.model_backends.values():
            backend.admission.wake(len(backend.admission))

    # --- requests --------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | None:
        """The answer to `request`, or None once it has been answered (proxied)."""
        metrics = self.metrics
        path = request.target.partition("?")[0]  # the gateway's own paths need no decoding
        openai = path in MODEL_PATHS or path == "/v1/models"
        if metrics.in_flight >= self.max_in_flight:
            metrics.error("busy")
            error = GatewayError(503, "busy", f"more than {self.max_in_flight} requests at once", retry_after=1)
            return error.response(openai)
        metrics.in_flight += 1
        try:
            host = request.header(b"host") or ""
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.endswith(".swarm"):
                bound = await self._service(request, name.removesuffix(".swarm"), request.target)
                await self._balanced(request, *bound)
                return None
            if path == "/metrics":
                return Response(200, generate_latest(metrics.registry), _METRICS)
            if path == "/-/status":
                return Response(200, _encode(self.status()), _JSON)
            if path == "/-/healthz":
                return Response(200, b"ok", _TEXT)
            if path in MODEL_PATHS:
                await self._balanced(request, *await self._model(request))
                return None
            if path == "/v1/models":
                return Response(200, listing(self.fleet.served_models()), _JSON)
            await self._balanced(request, *await self._service(request, *_by_path(request.target)))
            return None
        except GatewayError as exc:
            metrics.error(exc.reason)
            return exc.response(openai)
        finally:
            metrics.in_flight -= 1

    # Each of the next two says where a request goes (backend, target, body, key), for `_balanced`,
    # rather than awaiting it: each coroutine a request passes through costs it on every wait.

    async def _service(self, request: Request, service: str, target: str) -> Bound:
        if not SERVICE_NAME.match(service):
            raise GatewayError(404, "not_found", f"{service!r} is not a service name")
        # The common case, a followed service and no body, without the coroutines that wait.
        backend = self.fleet.backends.get(service) or await self.fleet.service(service)
        if request.body is not None or request.content_length is not None:
            body = await read_body(request, backend.route.body_limit)
        else:
            body = Body()
        return backend, target, body, request.header(b"x-swarm-key")

    async def _model(self, request: Request) -> Bound:
        if request.method != "POST":
            raise GatewayError(405, "bad_request", f"{request.target.partition('?')[0]}: only POST is served here")
        route = self.routes.models
        body = await read_body(request, route.body_limit, whole=True)
        found = parse(body.data or b"")
        backend = await self.fleet.model(found["model"])
        if route.strategy == "ai_aware":
            key = prompt_key(found, route.ai.block_chars * route.ai.max_blocks)
        else:
            key = user if isinstance(user := found.get("user"), str) else None
        return backend, request.target, body, key

    async def _balanced(self, request: Request, backend: Backend, target: str, body: Body, key: str | None) -> None:
        """Forward; while every candidate is saturated, wait for room, up to the route's queue timeout."""
        deadline = asyncio.get_running_loop().time() + backend.route.queue_timeout
        while True:
            try:
                await self.proxy.forward(request, backend, target, body, key)
                return
            except NoInstance:
                if not backend.core.pool.size:
                    raise GatewayError(
                        503, "no_instance", f"no instance of {backend.label!r} can take the request", retry_after=1
                    ) from None
            if not await backend.admission.wait(deadline):
                raise GatewayError(
                    429,
                    "saturated",
                    f"every instance of {backend.label!r} is saturated; try again shortly",
                    retry_after=1,
                )

    def status(self) -> dict[str, Any]:
        """What `/-/status` shows: the registry, whether the view is current, every route's balancer."""
        catalog = self.fleet.catalog
        state = self.fleet.state()
        followers = {
            f"{service}" + (f" ({selector})" if selector else ""): {
                "instances": len(follower.instances),
                "index": follower.index,
                "stale": follower.status.stale,
                "stale_since": follower.status.since,
            }
            for (service, selector), follower in self.fleet.followers.items()
        }
        return {
            "registry": self.client.base_url,
            "registry_stale": catalog.status.stale,
            "stale_since": catalog.status.since,
            "services": sorted(catalog.services or ()),
            "followed": followers,
            "routes": state["routes"],
            "models": self.fleet.served_models(),
            "in_flight": self.metrics.in_flight,
            "idle_connections": self.upstreams.idle(),
            "connections_opened": self.upstreams.opened,
            "reports_sent": self.reporter.sent,
            "scrape_failures": self.scraper.failures if self.scraper is not None else 0,
            "started_at": self.started_at,
        }


def _by_path(raw: str) -> tuple[str, str]:
    """`/SERVICE/PATH?QUERY`: the service, and `/PATH?QUERY` to send it."""
    end = len(raw)
    for mark in ("/", "?"):
        found = raw.find(mark, 1)
        if found != -1:
            end = min(end, found)
    service = raw[1:end]
    if not SERVICE_NAME.match(service):
        raise GatewayError(404, "not_found", f"no route for {raw.partition('?')[0]!r}: expected /SERVICE/PATH")
    target = raw[end:]
    if not target.startswith("/"):
        target = "/" + target
    return service, target


async def serve_forever(gateway: Gateway, listening: asyncio.AbstractServer, front: Front, stop: asyncio.Event) -> None:
    """Run `gateway` until `stop` is set; then take no new connections and give the requests in
    flight STOP_WITHIN seconds to finish."""
    await gateway.start()
    try:
        await stop.wait()
    finally:
        listening.close()
        await front.shutdown(STOP_WITHIN)
        await gateway.stop()
