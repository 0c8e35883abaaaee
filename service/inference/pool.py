"""The inference pool: which version of each model this process serves, and running it.

``InferencePool`` is what routes and the reload watcher hold; it composes one part per
concern:

- ``executors.py``: three bounded thread pools (work, loader, store reads);
- ``admission.py``: admission tickets and slots (503 ``overloaded``), and the memory budget;
- ``swap.py``: the served version of each model, hot reload, activation and fallback;
- ``lru.py``: a small LRU of non-active versions asked for with ``?version=``;
- ``resolve.py``: which loaded version serves a request;
- ``readiness.py``: what ``/readyz`` reports of each model;
- ``trim.py``: giving a burst's memory back to the OS once it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from core.settings import Settings
from model_store.store import ModelStore
from service.inference.admission import Admission, Overloaded
from service.inference.batching import BatcherClosed, Feeds
from service.inference.budget import MemoryBudget, RequestMemory
from service.inference.executors import PoolExecutors
from service.inference.lru import VersionLRU
from service.inference.readiness import LoadFailure, ModelState, model_states
from service.inference.resolve import VersionResolver
from service.inference.sessions import LoadedVersion
from service.inference.swap import ActiveVersions
from service.inference.trim import IdleRelease, release_memory
from service.metrics import PoolBacklog

__all__ = ["InferencePool", "LoadFailure", "ModelState", "Overloaded"]
T = TypeVar("T")


class InferencePool:
    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._executors = PoolExecutors(settings.worker_threads)
        self._admission = Admission(settings)
        self._release = IdleRelease(settings.memory_release_idle_s)
        self._lru = VersionLRU(settings.extra_versions_cached)
        self._active = ActiveVersions(store, settings, self._executors, self._lru,
                                      on_swap=self._release.rearm)
        self._resolver = VersionResolver(store, settings, self._executors, self._active,
                                         self._lru)

    @property
    def budget(self) -> MemoryBudget:
        return self._admission.budget

    # ------------------------------------------------------------------ running
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (decode, inference, encode) on the bounded work threads."""
        return await self._executors.work(fn, *args)

    async def read_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._executors.io(fn, *args)

    async def infer(self, version: LoadedVersion, role: str, feeds: Feeds) -> Feeds:
        """One graph run, through its batcher when batching is on for it."""
        graph = version.graph(role)
        if graph.batcher is not None:
            with contextlib.suppress(BatcherClosed):
                return await asyncio.wrap_future(graph.batcher.submit(feeds))
        return await self.run(graph.run, feeds)

    # ------------------------------------------------------------------ admission
    def admit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Admit one request or refuse it with 503 ``overloaded`` (Admission.admit)."""
        return self._admission.admit()

    def reading(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Count an admitted request as receiving its upload (/metrics)."""
        return self._admission.reading()

    def slot(self, memory: RequestMemory | None = None, parameter: str = "image"
             ) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound the requests processed at once and, with ``memory``, the working memory
        they hold (Admission.slot)."""
        return self._admission.slot(memory, parameter)

    async def trim_when_idle(self) -> None:
        """Hand a burst's memory back to the OS once it is over (the watcher's tick)."""
        if self._release.due(self._admission.quiet_since):
            await self.run(release_memory, self._held_versions(),
                           self.settings.ort_cpu_mem_arena)

    def _held_versions(self) -> list[LoadedVersion]:
        """Every loaded version at every precision it was asked for (a precision loaded
        on first use lives beside the version the pool holds, not in its tables)."""
        held = list(self._active.served.values()) + self._lru.values()
        return [at for loaded in held for at in loaded.all_precisions()]

    def backlog(self) -> PoolBacklog:
        """Requests waiting for or holding a slot, and queued in each batcher (/metrics)."""
        batchers: dict[tuple[str, str], int] = {}
        # Called from the scrape's thread: each list() copies a dict in one step (GIL).
        for loaded in list(self._active.served.values()) + self._lru.values():
            for role, graph in loaded.graphs.items():
                if graph.batcher is not None:
                    batchers[(loaded.ref, role)] = graph.batcher.pending
        admission, budget = self._admission, self._admission.budget
        return PoolBacklog(admission.slot_waiting, admission.slot_active,
                           admission.reading_upload, budget.waiting, budget.reserved,
                           budget.total, batchers)

    # ------------------------------------------------------------------ versions
    async def sync_all(self) -> None:
        """Bring every model in line with its ``active`` pointer (the watcher's tick)."""
        await self._active.sync_all()

    async def sync_model(self, name: str) -> None:
        await self._active.sync(name)

    async def activate(self, name: str, version: int, *, rollback: bool = False
                       ) -> int | None:
        """Load and warm ``name@version``, then move the store's pointer and swap
        (ActiveVersions.activate); returns the version it replaced."""
        return await self._active.activate(name, version, rollback=rollback)

    async def resolve(self, task: str, model: str | None, version: int | None,
                      precision: str | None = None) -> LoadedVersion:
        """The version a request is served by (VersionResolver.resolve)."""
        return await self._resolver.resolve(task, model, version, precision)

    def loaded(self, name: str) -> LoadedVersion | None:
        return self._active.served.get(name)

    async def states(self) -> list[ModelState]:
        """Every model as /readyz reports it."""
        return await self.read_store(model_states, self.store, self._active.served,
                                     self._active.failures)

    def close(self) -> None:
        self._active.clear()
        self._lru.clear()
        self._executors.shutdown()
