"""The inference pool: which version of each model this process serves, and running it.

- ``active``: one LoadedVersion per model, swapped atomically when the store's ``active``
  pointer moves (the watcher in reload.py, or an activation through this process).
  Requests hold the LoadedVersion they started with, so a swap never breaks them.
- ``extra``: a small LRU of non-active versions asked for with ``?version=``.
- Three bounded executors keep blocking work off the event loop: ``work`` (decode,
  inference, encode; Settings.worker_threads), ``loader`` (one load at a time, so a reload
  never takes request threads or doubles memory) and ``io`` (cheap store reads, so the
  watcher never queues behind requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from core.settings import Settings
from model_store import errors as store_errors
from model_store.errors import ActivationRefused, NoActiveVersion
from model_store.store import ModelStore
from service.errors import IMPORT_HINT, ModelNotReady, WrongTask
from service.inference.batching import BatcherClosed, Feeds
from service.inference.sessions import LoadedVersion, load_version
from service.metrics import MODEL_RELOAD_FAILURES, MODEL_RELOADS, PoolBacklog

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LoadFailure:
    version: int
    error: str
    at: float


@dataclass(frozen=True)
class ModelState:
    """One model as /readyz reports it."""

    name: str
    task: str | None
    active_version: int | None
    loaded_version: int | None
    providers: list[str]
    error: str | None

    @property
    def ready(self) -> bool:
        return self.active_version is None or self.loaded_version == self.active_version


class InferencePool:
    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._work = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="work")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self._io = ThreadPoolExecutor(2, thread_name_prefix="store-io")
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._slot_waiting = 0
        self._slot_active = 0
        self._active: dict[str, LoadedVersion] = {}
        self._extra: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._failures: dict[str, LoadFailure] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ executors
    # Each call runs in a copy of the caller's context, so the request id of the request
    # that asked tags the log lines of the thread (run_in_executor alone does not copy it).
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (decode, inference, encode) on the bounded work threads."""
        return await _in_context(self._work, fn, *args)

    async def read_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await _in_context(self._io, fn, *args)

    async def _load(self, name: str, version: int) -> LoadedVersion:
        return await _in_context(
            self._loader, load_version, self.store, name, version, self.settings
        )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Bound the requests being processed at once (Settings.max_concurrency)."""
        self._slot_waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._slot_waiting -= 1
        self._slot_active += 1
        try:
            yield
        finally:
            self._slot_active -= 1
            self._slots.release()

    def backlog(self) -> PoolBacklog:
        """Requests waiting for or holding a slot, and queued in each batcher (/metrics)."""
        batchers: dict[tuple[str, str], int] = {}
        # Called from the scrape's thread: each list() copies a dict in one step (GIL).
        for loaded in list(self._active.values()) + list(self._extra.values()):
            for role, graph in loaded.graphs.items():
                if graph.batcher is not None:
                    batchers[(loaded.ref, role)] = graph.batcher.pending
        return PoolBacklog(self._slot_waiting, self._slot_active, batchers)

    async def infer(self, version: LoadedVersion, role: str, feeds: Feeds) -> Feeds:
        """One graph run, through its batcher when batching is on for it."""
        graph = version.graph(role)
        if graph.batcher is not None:
            with contextlib.suppress(BatcherClosed):
                return await asyncio.wrap_future(graph.batcher.submit(feeds))
        return await self.run(graph.run, feeds)

    def close(self) -> None:
        self._active.clear()
        self._extra.clear()
        for executor in (self._work, self._loader, self._io):
            executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ loading
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def sync_all(self) -> None:
        """Bring every model in line with its ``active`` pointer (the watcher's tick)."""
        names = await self.read_store(self.store.model_names)
        await asyncio.gather(*(self.sync_model(name) for name in names))

    async def sync_model(self, name: str) -> None:
        async with self._lock(name):
            try:
                active = await self.read_store(self.store.active_version, name)
            except store_errors.StoreError:
                return  # removed, or a line still being written
            current = self._active.get(name)
            if active is None or (current is not None and current.manifest.version == active):
                return
            failure = self._failures.get(name)
            if (failure is not None and failure.version == active
                    and time.monotonic() - failure.at < self.settings.reload_retry_s):
                return  # do not hammer a broken version every poll
            try:
                loaded = await self._obtain(name, active)
            except Exception as exc:
                self._failures[name] = LoadFailure(active, str(exc), time.monotonic())
                MODEL_RELOAD_FAILURES.labels(name).inc()
                log.error("cannot load %s@%s; %s keeps serving: %s", name, active,
                          current.ref if current else "nothing", exc)
                return
            self._swap(name, loaded)

    async def _obtain(self, name: str, version: int) -> LoadedVersion:
        """A loaded version, from the LRU when it is already there."""
        cached = self._extra.pop((name, version), None)
        return cached if cached is not None else await self._load(name, version)

    def _swap(self, name: str, loaded: LoadedVersion) -> None:
        previous = self._active.get(name)
        self._active[name] = loaded  # one assignment: readers see old or new, never neither
        self._failures.pop(name, None)
        if loaded is not previous:  # re-activating the served version swaps nothing
            MODEL_RELOADS.labels(name).inc()
        if previous is not None:
            log.info("now serving %s; retired %s (it finishes its in-flight requests)",
                     loaded.ref, previous.ref)
        else:
            log.info("now serving %s", loaded.ref)

    async def activate(self, name: str, version: int, *, rollback: bool = False
                       ) -> int | None:
        """Load and warm ``name@version``, then move the store's pointer and swap.

        Loading first means a version that cannot load is refused before anything changes.
        ``rollback=True`` (POST /models/{name}/rollback) has the store record the move as a
        rollback, so the next rollback walks further back instead of toggling.
        """
        async with self._lock(name):
            manifest = await self.read_store(self.store.servable_manifest, name, version)
            current = self._active.get(name)
            if current is not None and current.manifest.version == version:
                loaded = current
            else:
                try:
                    loaded = await self._obtain(name, version)
                except Exception as exc:
                    MODEL_RELOAD_FAILURES.labels(name).inc()
                    raise ActivationRefused(
                        f"{manifest.ref} cannot be loaded, nothing changed: {exc}"
                    ) from exc
            previous = await self.read_store(
                functools.partial(self.store.activate, rollback=rollback), name, version)
            self._swap(name, loaded)
            return previous

    # ------------------------------------------------------------------ lookup
    async def resolve(self, task: str, model: str | None, version: int | None) -> LoadedVersion:
        """The version a request is served by (default model of the task, active version)."""
        name = model or self.settings.model_for(task)
        loaded = self._active.get(name)
        if version is not None and (loaded is None or loaded.manifest.version != version):
            loaded = await self._extra_version(name, version)
        elif loaded is None:
            loaded = await self._resolve_unloaded(task, name, is_default=model is None)
        if loaded.task != task:
            raise WrongTask(name, loaded.task, task)
        return loaded

    async def _resolve_unloaded(self, task: str, name: str, is_default: bool) -> LoadedVersion:
        hint = IMPORT_HINT.format(task=task, model=name)
        try:
            active = await self.read_store(self.store.active_version, name)
        except store_errors.ModelNotFound:
            if not is_default:
                raise
            # The task's default model not existing yet is a fresh install, not a typo.
            raise NoActiveVersion(f"no model serves {task!r} yet: {hint}") from None
        if active is None:
            raise NoActiveVersion(f"model {name!r} has no active version: {hint}")
        await self.sync_model(name)  # published since the last poll: load it now
        loaded = self._active.get(name)
        if loaded is None:
            failure = self._failures.get(name)
            raise ModelNotReady(f"{name}@{active} failed to load: "
                                f"{failure.error if failure else 'unknown error'}")
        return loaded

    async def _extra_version(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        async with self._lock(name):
            cached = self._extra.get(key)
            if cached is not None:
                self._extra.move_to_end(key)
                return cached
            # 404 for an unknown version, 409 for one that failed parity
            manifest = await self.read_store(self.store.servable_manifest, name, version)
            try:
                loaded = await self._load(name, version)
            except Exception as exc:
                raise ModelNotReady(f"{manifest.ref} failed to load: {exc}") from exc
            if self.settings.extra_versions_cached > 0:
                self._extra[key] = loaded
                while len(self._extra) > self.settings.extra_versions_cached:
                    evicted, _ = self._extra.popitem(last=False)
                    log.info("evicted %s@%s from the extra-version cache", *evicted)
            return loaded

    def loaded(self, name: str) -> LoadedVersion | None:
        return self._active.get(name)

    # ------------------------------------------------------------------ readiness
    def _states(self) -> list[ModelState]:
        states = []
        for name in self.store.model_names():
            loaded = self._active.get(name)
            failure = self._failures.get(name)
            problem = failure.error if failure else None
            try:
                summary = self.store.summary(name)
                task, active = summary.task, summary.active
            except store_errors.ManifestInvalid as exc:  # e.g. a task no plugin registers
                task, problem = None, problem or str(exc)
                try:
                    active = self.store.active_version(name)
                except store_errors.StoreError:
                    continue
            except store_errors.StoreError:
                continue  # removed, or a line still being written
            states.append(ModelState(
                name=name,
                task=task,
                active_version=active,
                loaded_version=loaded.manifest.version if loaded else None,
                providers=loaded.providers if loaded else [],
                error=problem,
            ))
        return states

    async def states(self) -> list[ModelState]:
        return await self.read_store(self._states)


async def _in_context(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)
