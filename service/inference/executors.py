"""The pool's three bounded thread pools, which keep blocking work off the event loop.

- ``work``: decode, inference, encode (Settings.worker_threads);
- ``loader``: one load at a time, so a reload never takes request threads or doubles memory;
- ``io``: cheap store reads, so the reload watcher never queues behind requests.

Each call runs in a copy of the caller's context, so the request id of the request that
asked tags the log lines of the thread (``run_in_executor`` alone does not copy it).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class PoolExecutors:
    def __init__(self, work_threads: int) -> None:
        self._work = ThreadPoolExecutor(work_threads, thread_name_prefix="work")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self._io = ThreadPoolExecutor(2, thread_name_prefix="store-io")

    async def work(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_context(self._work, fn, *args)

    async def load(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_context(self._loader, fn, *args)

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_context(self._io, fn, *args)

    def shutdown(self) -> None:
        for executor in (self._work, self._loader, self._io):
            executor.shutdown(wait=False, cancel_futures=True)


async def in_context(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)
