"""The reload watcher: follows every model's ``active`` pointer in the store.

Each tick reads the pointers (a directory listing and one tiny file per model); only a
change costs more: the pool loads the new version in its loader thread, warms it up and
swaps it in, while requests already running finish on the version they hold. The same
tick hands freed heap back to the OS once the pool has been idle for a while after a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.inference.pool import InferencePool

log = logging.getLogger(__name__)


class ReloadWatcher:
    def __init__(self, pool: InferencePool, interval_s: float) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="reload-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._pool.sync_all()
                await self._pool.trim_when_idle()  # give a burst's heap back once quiet
            except Exception:  # a bad tick must never end the watcher
                log.exception("reload watcher tick failed; retrying next tick")
