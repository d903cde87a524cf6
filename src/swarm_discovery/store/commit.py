"""Group commit: every write submitted in one event-loop turn shares one durable commit.

A write is applied in memory and acknowledged only after its commit returns, so readers and
watchers never see a change that a crash could take back. Changes with nothing to store (live
metrics, TTL status) pass through the same queue, so that every change is applied in the order
of its index.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import StoreError
from ..telemetry import COMMIT_BATCH
from . import Change, Store

log = logging.getLogger("swarm.store")
T = TypeVar("T")


class GroupCommitter:
    def __init__(self, store: Store, revision: Callable[[], int]) -> None:
        self._store = store
        self._revision = revision
        self._pending: list[tuple[Change | None, Callable[[], Any], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, change: Change | None, apply: Callable[[], T]) -> asyncio.Future[T]:
        """The future gets what `apply` returns, once `change` is committed and `apply` has run."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((change, apply, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                changes = [change for change, _, _ in batch if change is not None]
                try:
                    if changes:
                        COMMIT_BATCH.observe(len(changes))
                        await self._store.commit(changes, self._revision())
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"store commit failed: {exc}"))
                    continue
                for _, apply, future in batch:
                    try:
                        applied = apply()
                    except Exception as exc:  # a bug in one apply must not strand the writes after it
                        log.exception("applying a committed change failed")
                        if not future.done():
                            future.set_exception(exc)
                        continue
                    if not future.done():
                        future.set_result(applied)
        finally:
            self._task = None

    async def drain(self) -> None:
        while self._task is not None:
            await asyncio.shield(self._task)
