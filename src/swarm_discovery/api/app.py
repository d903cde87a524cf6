"""The ASGI application: routes, error translation, and the registry's lifetime."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..balance.outliers import OutlierSettings
from ..durations import parse_duration
from ..errors import SwarmError
from ..health.protection import ExpirySettings
from ..records import ErrorBody
from ..registry import Registry
from ..store import open_store
from .cache import ResponseCache
from .front import Front
from .routes import openapi_document, routes

log = logging.getLogger("swarm")
_encode = msgspec.json.Encoder().encode


class Settings(msgspec.Struct, frozen=True):
    data_dir: str = "swarm-data"
    store: str = "sqlite"
    expiry: ExpirySettings = ExpirySettings()
    outliers: OutlierSettings = OutlierSettings()

    @classmethod
    def from_env(cls) -> Settings:
        """What `swarm serve` hands its worker process: SWARM_DATA_DIR, SWARM_STORE, SWARM_EXPIRY_*."""
        given = {"data_dir": os.environ.get("SWARM_DATA_DIR"), "store": os.environ.get("SWARM_STORE")}
        share, minimum, window = (os.environ.get(f"SWARM_EXPIRY_{k}") for k in ("SHARE", "MINIMUM", "WINDOW"))
        default = ExpirySettings()
        expiry = ExpirySettings(
            share=float(share) if share else default.share,
            minimum=int(minimum) if minimum else default.minimum,
            window=parse_duration(window, "SWARM_EXPIRY_WINDOW") if window else default.window,
        )
        base = os.environ.get("SWARM_EJECTION_BASE")
        outliers = OutlierSettings(base=parse_duration(base, "SWARM_EJECTION_BASE")) if base else OutlierSettings()
        return cls(**{k: v for k, v in given.items() if v}, expiry=expiry, outliers=outliers)


def _error(status_code: int, message: str) -> Response:
    return Response(_encode(ErrorBody(error=message)), status_code, media_type="application/json")


async def _swarm_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwarmError)
    return _error(exc.status_code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such path: {request.url.path}", 405: f"method {request.method} not allowed here"}
    response = _error(exc.status_code, message.get(exc.status_code, str(exc.detail)))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "internal error; see the server log")


def create_app(settings: Settings | None = None) -> Front:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings.store, settings.data_dir)
        registry = Registry(store, expiry=settings.expiry, outliers=settings.outliers)
        await registry.start()
        app.state.registry = registry
        app.state.cache = ResponseCache(registry)
        app.state.openapi = openapi_document(__version__)
        log.info(
            "swarm %s ready: %s store in %s, index %d", __version__, settings.store, settings.data_dir, registry.index
        )
        try:
            yield
        finally:
            await registry.stop()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={SwarmError: _swarm_error, HTTPException: _http_error, Exception: _unexpected},
    )
    return Front(app)
