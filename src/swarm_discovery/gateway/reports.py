"""Passive health from real traffic: what the gateway saw of each instance, reported to the registry.

Every second the outcomes every backend's balancer collected (at most 1,000 each a second, as the
SDK's balancer keeps them) go to `POST /v1/reports` in batches the server's limits allow (the
client splits them); the server aggregates every client's reports and ejects an instance they
agree is failing, for everyone. A report that cannot be delivered is dropped (the next second
brings fresh ones); the first failure after a success is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..errors import ApiError
from ..records import Report
from .backend import Backend
from .looping import Looping
from .registry import RegistryClient

log = logging.getLogger("swarm.gateway")
REPORT_EVERY = 1.0


class Reporter(Looping):
    def __init__(self, client: RegistryClient, backends: Callable[[], Iterable[Backend]]) -> None:
        self.client = client
        self._backends = backends
        self._failing = False
        self.sent = 0

    async def stop(self) -> None:
        await super().stop()
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            await self.flush()

    async def flush(self) -> None:
        reports: list[Report] = []
        for backend in self._backends():
            reports += backend.reports()
        if not reports:
            return
        try:
            await self.client.report(reports)
        except ApiError as exc:
            if not self._failing:
                log.warning("cannot report outcomes to the registry: %s", exc)
            self._failing = True
            return
        self._failing = False
        self.sent += len(reports)
