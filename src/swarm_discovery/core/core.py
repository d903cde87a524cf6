"""The `Core`: store, registry, health, access control and lookup, built, started and stopped as one.

`server.py` builds one per server process; every front (the HTTP API today; DNS, the Consul API
and Prometheus service discovery next) is handed the running core and asks its `lookup`.
"""

from __future__ import annotations

import msgspec

from ..acl import Acl, AclSettings
from ..balance.outliers import OutlierSettings
from ..balance.quorum import ReportSettings
from ..health.limits import ProbeSettings
from ..health.monitor import HealthMonitor
from ..health.protection import ExpirySettings
from ..store import Store, open_store
from .lookup import Lookup
from .quotas import Quotas
from .registry import Registry


class CoreSettings(msgspec.Struct, frozen=True):
    data_dir: str = "swarm-data"
    store: str = "sqlite"
    expiry: ExpirySettings = ExpirySettings()
    outliers: OutlierSettings = OutlierSettings()
    probes: ProbeSettings = ProbeSettings()
    acl: AclSettings = AclSettings()
    reports: ReportSettings = ReportSettings()  # whose reports eject: a quorum, or one trusted
    quotas: Quotas = Quotas()  # instances per service and per registrant


class Core:
    def __init__(self, settings: CoreSettings | None = None, store: Store | None = None) -> None:
        self.settings = settings or CoreSettings()
        self.store = store or open_store(self.settings.store, self.settings.data_dir)
        s = self.settings
        self.registry = Registry(
            self.store, expiry=s.expiry, outliers=s.outliers, probes=s.probes, reports=s.reports, quotas=s.quotas
        )
        self.acl = Acl(self.settings.acl, self.registry.commit)
        self.registry.follow("acl", self.acl)
        self.lookup = Lookup(self.registry, self.acl)

    @property
    def health(self) -> HealthMonitor:
        return self.registry.health

    async def start(self) -> None:
        await self.registry.start()

    def end_waits(self) -> None:
        """Answer every blocking query and end every watch stream now: the server is stopping."""
        self.registry.changes.close()

    async def stop(self) -> None:
        """End blocking queries and watch streams at once, then stop checks and close the store."""
        await self.registry.stop()
