"""What the gateway's background loops share: started once, cancelled and awaited on stop."""

from __future__ import annotations

import asyncio


class Looping:
    """A loop (`_run`) that runs in the background from `start()` until `stop()`."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
