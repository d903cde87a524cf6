"""The HTTP front over a core: the route table (native and Consul-compatible) in front, and the ASGI app.

`swarm serve` hands a running `Core` to the front over RSGI (`server.py`, `rsgi.py`). Any ASGI
server can run `create_app()` instead: its lifespan builds, starts and stops a core of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
from starlette.applications import Starlette

from ...acl import AclSettings
from ...balance.outliers import OutlierSettings
from ...balance.quorum import ReportSettings
from ...core.core import Core, CoreSettings
from ...core.quotas import Quotas
from ...durations import parse_duration
from ...health.limits import ProbeSettings
from ...health.protection import ExpirySettings
from ..consul.routes import CONSUL_ROUTES, unsupported
from ..prometheus.sd import SD_ROUTES
from .dispatch import RouteTable
from .front import Front
from .limits import Limits
from .routes import ROUTES

log = logging.getLogger("swarm")
T = TypeVar("T", ProbeSettings, ReportSettings, Quotas, AclSettings)


def settings_from_env() -> CoreSettings:
    """What `swarm serve` hands its worker process: SWARM_DATA_DIR, SWARM_STORE, SWARM_EXPIRY_*,
    SWARM_EJECTION_BASE, and as JSON SWARM_PROBES (ProbeSettings), SWARM_REPORTS (ReportSettings),
    SWARM_QUOTAS (Quotas) and SWARM_ACL (AclSettings)."""
    given = {"data_dir": os.environ.get("SWARM_DATA_DIR"), "store": os.environ.get("SWARM_STORE")}
    share, minimum, window, owners = (
        os.environ.get(f"SWARM_EXPIRY_{k}") for k in ("SHARE", "MINIMUM", "WINDOW", "OWNERS")
    )
    default = ExpirySettings()
    expiry = ExpirySettings(
        share=float(share) if share else default.share,
        minimum=int(minimum) if minimum else default.minimum,
        window=parse_duration(window, "SWARM_EXPIRY_WINDOW") if window else default.window,
        owners=int(owners) if owners else default.owners,
    )
    base = os.environ.get("SWARM_EJECTION_BASE")
    outliers = OutlierSettings(base=parse_duration(base, "SWARM_EJECTION_BASE")) if base else OutlierSettings()
    return CoreSettings(
        **{k: v for k, v in given.items() if v},
        expiry=expiry,
        outliers=outliers,
        probes=_from_json("SWARM_PROBES", ProbeSettings),
        reports=_from_json("SWARM_REPORTS", ReportSettings),
        quotas=_from_json("SWARM_QUOTAS", Quotas),
        acl=_from_json("SWARM_ACL", AclSettings),
    )


def _from_json(variable: str, kind: type[T]) -> T:
    """Settings given as JSON in an environment variable, else their defaults."""
    given = os.environ.get(variable)
    return msgspec.json.decode(given, type=kind) if given else kind()


def route_table() -> RouteTable:
    """The native API, the Consul-compatible subset and Prometheus service discovery, on one port."""
    return RouteTable(ROUTES + CONSUL_ROUTES + SD_ROUTES)


def not_found(method: str, path: str) -> str | None:
    """A 404 message that says where to go, where one can: a Consul path outside the subset, or a
    service's listing asked for under its registrations' path, as REST would have it."""
    parts = path.split("/")
    if method == "GET" and len(parts) == 5 and parts[:3] == ["", "v1", "services"] and parts[4] == "instances":
        return f"no such path: {path}; the instances of a service are listed at /v1/services/{parts[3]}"
    return unsupported(method, path)


def create_front(limits: Limits | None = None) -> Front:
    """The HTTP front, answering 503 until a core is attached."""
    return Front(None, route_table(), limits or Limits(), not_found)


def create_app(settings: CoreSettings | None = None, limits: Limits | None = None) -> Front:
    """The ASGI application with a core of its own, run by the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        core = Core(settings or settings_from_env())
        await core.start()
        front.attach(core)
        try:
            yield
        finally:
            front.detach()
            await core.stop()

    front = Front(Starlette(lifespan=lifespan), route_table(), limits or Limits(), not_found)
    return front
