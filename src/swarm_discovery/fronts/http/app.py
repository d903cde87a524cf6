"""The ASGI application: settings, the registry's lifetime, and the route table in front."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette

from ... import __version__
from ...balance.outliers import OutlierSettings
from ...core.registry import Registry
from ...durations import parse_duration
from ...health.protection import ExpirySettings
from ...store import open_store
from .cache import ResponseCache
from .context import Context
from .dispatch import RouteTable
from .front import Front
from .routes import ENDPOINTS, openapi_document

log = logging.getLogger("swarm")


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


def create_app(settings: Settings | None = None) -> Front:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings.store, settings.data_dir)
        registry = Registry(store, expiry=settings.expiry, outliers=settings.outliers)
        await registry.start()
        front.context = Context(registry, ResponseCache(registry), openapi_document(__version__))
        log.info(
            "swarm %s ready: %s store in %s, index %d", __version__, settings.store, settings.data_dir, registry.index
        )
        try:
            yield
        finally:
            front.context = None
            await registry.stop()

    front = Front(Starlette(lifespan=lifespan), RouteTable(ENDPOINTS))
    return front
