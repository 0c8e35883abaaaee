"""The inference pool: which version of each model this process serves, and running it.

- ``active``: one LoadedVersion per model, swapped atomically when the store's ``active``
  pointer moves (the watcher in reload.py, or an activation through this process).
  Requests hold the LoadedVersion they started with, so a swap never breaks them.
- ``extra``: a small LRU of non-active versions asked for with ``?version=``.
- Three bounded executors keep blocking work off the event loop: ``work`` (decode,
  inference, encode; Settings.worker_threads), ``loader`` (one load at a time, so a reload
  never takes request threads or doubles memory) and ``io`` (cheap store reads, so the
  watcher never queues behind requests).
- Admission (``admit``/``slot``): at most ``max_concurrency`` requests run and at most
  ``max_queued`` more wait; the next one is refused at once with 503 ``overloaded`` and a
  ``Retry-After``, so a burst can never hold more than that many uploads or decoded images.
- Last good version: a model whose pointer names a version that cannot load keeps serving
  the version it had, or at start the newest loadable version of its activation history;
  ``/readyz`` reports that as a fallback (``ModelState.fallback``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import ctypes.util
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from core.errors import DomainError
from core.settings import Settings
from model_store import errors as store_errors
from model_store.errors import ActivationRefused
from model_store.store import ModelStore
from service.errors import ModelNotReady, WrongTask
from service.inference.batching import BatcherClosed, Feeds
from service.inference.budget import MB, MemoryBudget, RequestMemory
from service.inference.sessions import (
    WARMUP_SIDE,
    LoadedVersion,
    choose_precision,
    load_version,
)
from service.metrics import (
    MODEL_RELOAD_FAILURES,
    MODEL_RELOADS,
    MODEL_SERVED_VERSION,
    REQUESTS_SHED,
    PoolBacklog,
)
from service.unserved import NothingServes
from tasks import default_model

log = logging.getLogger(__name__)
T = TypeVar("T")
# Set while a request holds an admission ticket, so the slot it takes later in the same
# task does not count it twice.
_ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted", default=False)


class Overloaded(DomainError):
    """More requests than the pool runs plus the ones it lets wait: retry later."""

    code = "overloaded"
    http_status = 503

    def __init__(self, admitted: int, retry_after_s: int) -> None:
        super().__init__(
            f"the server is at capacity ({admitted} requests running or waiting);"
            f" retry in {retry_after_s} s", {"retry_after_s": retry_after_s})
        # Sent as response headers by the error handler (service/errors.py).
        self.headers = {"Retry-After": str(retry_after_s)}


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
    active_version: int | None  # what the store's pointer names
    loaded_version: int | None  # what this process serves (None: nothing)
    providers: list[str]
    error: str | None
    failed_version: int | None = None  # the version whose load failed last, if any

    @property
    def fallback(self) -> bool:
        """Serving another version than the pointer names because that one could not load
        (a pointer that moved a moment ago and is being loaded is not a fallback)."""
        return (self.loaded_version is not None and self.loaded_version != self.active_version
                and self.failed_version == self.active_version)

    @property
    def ready(self) -> bool:
        """Serves something: a model with no active version needs nothing loaded."""
        return self.active_version is None or self.loaded_version is not None


class InferencePool:
    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._work = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="work")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self._io = ThreadPoolExecutor(2, thread_name_prefix="store-io")
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._admitted = 0
        self._slot_waiting = 0
        self._slot_active = 0
        self._reading = 0
        self.budget = MemoryBudget(settings.memory_budget_mb * MB, settings.memory_request_mb * MB,
                                   settings.memory_wait_s, settings.overload_retry_after_s)
        self._idle_since = time.monotonic()
        self._trimmed = False  # loading and warm-up leave arena memory to give back too
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
    async def admit(self) -> AsyncIterator[None]:
        """Admit one request, or refuse it at once with 503 ``overloaded``.

        ``max_concurrency`` requests run and ``max_queued`` more may wait; routes take the
        ticket before they read the upload, so what a burst holds in memory (bodies, then
        decoded images) is bounded by those two numbers, not by the number of clients.
        Re-entrant within one request (``slot`` takes one when the route did not).
        """
        if _ADMITTED.get():
            yield
            return
        limit = self.settings.max_concurrency + self.settings.max_queued
        if self._admitted >= limit:
            REQUESTS_SHED.inc()
            raise Overloaded(self._admitted, self.settings.overload_retry_after_s)
        self._admitted += 1
        token = _ADMITTED.set(True)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self._admitted -= 1
            if self._admitted == 0:
                self._idle_since, self._trimmed = time.monotonic(), False

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Count an admitted request as receiving its upload (/metrics)."""
        self._reading += 1
        try:
            yield
        finally:
            self._reading -= 1

    @contextlib.asynccontextmanager
    async def slot(self, memory: RequestMemory | None = None, parameter: str = "image"
                   ) -> AsyncIterator[None]:
        """Bound the requests being processed at once (Settings.max_concurrency) and, with
        ``memory``, the working memory they hold (``budget``: waits, then 503)."""
        async with self.admit():
            if memory is not None and memory.source_pixels > self.settings.max_pixels:
                memory = None  # the decode refuses it from its header (too_many_pixels)
            if memory is not None:
                self.budget.check(memory, parameter)  # 422 before waiting for anything
            self._slot_waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._slot_waiting -= 1
            self._slot_active += 1
            try:
                if memory is None:
                    yield
                else:
                    async with self.budget.reserve(memory, parameter):
                        yield
            finally:
                self._slot_active -= 1
                self._slots.release()

    async def trim_when_idle(self) -> None:
        """Hand a burst's memory back to the OS once it is over (the watcher's tick).

        onnxruntime's CPU arena keeps its high-water mark and glibc keeps what many threads
        freed; both are returned (``release_memory``) when no request has been admitted for
        ``memory_release_idle_s``, once per burst, so steady traffic keeps its fast arena.
        """
        idle_s = self.settings.memory_release_idle_s
        if (idle_s <= 0 or self._trimmed or self._admitted
                or time.monotonic() - self._idle_since < idle_s):
            return
        self._trimmed = True
        await self.run(release_memory, self._held_versions(), self.settings.ort_cpu_mem_arena)

    def _held_versions(self) -> list[LoadedVersion]:
        """Every loaded version at every precision it was asked for (a precision loaded
        on first use lives beside the version the pool holds, not in its tables)."""
        held = list(self._active.values()) + list(self._extra.values())
        return [at for loaded in held for at in loaded.all_precisions()]

    def backlog(self) -> PoolBacklog:
        """Requests waiting for or holding a slot, and queued in each batcher (/metrics)."""
        batchers: dict[tuple[str, str], int] = {}
        # Called from the scrape's thread: each list() copies a dict in one step (GIL).
        for loaded in list(self._active.values()) + list(self._extra.values()):
            for role, graph in loaded.graphs.items():
                if graph.batcher is not None:
                    batchers[(loaded.ref, role)] = graph.batcher.pending
        return PoolBacklog(self._slot_waiting, self._slot_active, self._reading,
                           self.budget.waiting, self.budget.reserved, self.budget.total,
                           batchers)

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
            failure = self._failures.get(name)
            if active is None or (current is not None and current.manifest.version == active):
                if failure is not None and failure.version != active:
                    del self._failures[name]  # the pointer left the broken version
                return
            if (failure is not None and failure.version == active
                    and time.monotonic() - failure.at < self.settings.reload_retry_s):
                return  # do not hammer a broken version every poll
            try:
                loaded = await self._obtain(name, active)
            except Exception as exc:
                self._failures[name] = LoadFailure(active, str(exc), time.monotonic())
                MODEL_RELOAD_FAILURES.labels(name).inc()
                if current is None:  # at start: serve the last good version there is
                    current = await self._fall_back(name, active)
                log.error("cannot load %s@%s; %s keeps serving: %s", name, active,
                          current.ref if current else "nothing", exc)
                return
            self._swap(name, loaded)

    async def _fall_back(self, name: str, broken: int) -> LoadedVersion | None:
        """Load the newest version of the activation history that loads (not ``broken``).

        Called when a model's pointer names a version that cannot load and this process
        serves nothing of that model yet (a fresh start): it keeps serving what was last
        good instead of nothing; /readyz reports the fallback and the load error.
        """
        try:
            history = await self.read_store(self.store.history, name)
            existing = set(await self.read_store(self.store.versions, name))
        except store_errors.StoreError:
            return None
        tried: set[int] = {broken}
        for entry in reversed(history):
            version = entry.get("version")
            if not isinstance(version, int) or version in tried or version not in existing:
                continue
            tried.add(version)
            try:
                await self.read_store(self.store.servable_manifest, name, version)
                loaded = await self._obtain(name, version)
            except Exception as exc:
                log.warning("fallback %s@%s cannot load either: %s", name, version, exc)
                continue
            self._swap(name, loaded, fallback=True)
            return loaded
        return None

    async def _obtain(self, name: str, version: int) -> LoadedVersion:
        """A loaded version, from the LRU when it is already there."""
        cached = self._extra.pop((name, version), None)
        return cached if cached is not None else await self._load(name, version)

    def _swap(self, name: str, loaded: LoadedVersion, *, fallback: bool = False) -> None:
        previous = self._active.get(name)
        self._active[name] = loaded  # one assignment: readers see old or new, never neither
        MODEL_SERVED_VERSION.labels(name).set(loaded.manifest.version)
        if not fallback:  # a fallback keeps the failure: it is why /readyz says fallback
            self._failures.pop(name, None)
        self._trimmed = False  # the retired version's memory goes back at the next idle
        if loaded is not previous:  # re-activating the served version swaps nothing
            MODEL_RELOADS.labels(name).inc()
        if previous is not None:
            log.info("now serving %s; retired %s (it finishes its in-flight requests)",
                     loaded.ref, previous.ref)
        else:
            log.info("now serving %s%s", loaded.ref,
                     " (fallback: the active version cannot load)" if fallback else "")

    async def activate(self, name: str, version: int, *, rollback: bool = False
                       ) -> int | None:
        """Load and warm ``name@version``, then move the store's pointer and swap.

        Loading first means a version that cannot load is refused before anything changes.
        ``rollback=True`` (POST /models/{name}/rollback) has the store record the move as a
        rollback, so the next rollback walks further back instead of toggling.
        """
        async with self._lock(name):
            # verified: a corrupt version is refused as `version_corrupt` naming the file
            manifest = await self.read_store(self.store.verified_manifest, name, version)
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
    async def resolve(self, task: str, model: str | None, version: int | None,
                      precision: str | None = None) -> LoadedVersion:
        """The version a request is served by (default model of the task, active version),
        at ``precision`` (None: Settings.default_precision; sessions.choose_precision)."""
        name = model or default_model(task, self.settings.default_models)
        loaded = self._active.get(name)
        if version is not None and (loaded is None or loaded.manifest.version != version):
            loaded = await self._extra_version(name, version)
        elif loaded is None:
            loaded = await self._resolve_unloaded(task, name, is_default=model is None)
        if loaded.task != task:
            raise WrongTask(name, loaded.task, task)
        chosen = choose_precision(loaded.manifest, loaded.spec, precision,
                                  self.settings.default_precision)
        ready = loaded.loaded_precision(chosen)  # the first request at it loads it (loader)
        return ready if ready is not None else await _in_context(
            self._loader, loaded.load_precision, chosen, self.settings, self.store)

    async def _resolve_unloaded(self, task: str, name: str, is_default: bool) -> LoadedVersion:
        # The 503's advice (jobs on the way, refused versions, the import command for this
        # task) is added where the error is answered: service/unserved.py.
        try:
            active = await self.read_store(self.store.active_version, name)
        except store_errors.ModelNotFound:
            if not is_default:
                raise
            # The task's default model not existing yet is a fresh install, not a typo.
            raise NothingServes(task, name, f"no model serves {task!r} yet") from None
        if active is None:
            raise NothingServes(task, name, f"model {name!r} has no active version")
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
                failed_version=failure.version if failure else None,
            ))
        return states

    async def states(self) -> list[ModelState]:
        return await self.read_store(self._states)


async def _in_context(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)



_LIBC: ctypes.CDLL | None = None


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: return freed heap pages to the OS. False where the C
    library has no such function (musl, macOS): nothing to do there."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    return bool(trim(0))


def release_memory(versions: list[LoadedVersion], arena: bool) -> None:
    """Shrink every session's CPU arena to its first chunk, then ``malloc_trim``.

    onnxruntime shrinks an arena only at the end of a run that asks for it, so each graph
    runs once on its smallest contract-shaped input with the shrinkage option (a batch of
    one: milliseconds to a fraction of a second).
    """
    if arena:
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        for loaded in versions:
            for role, graph in loaded.graphs.items():
                try:
                    graph.session.run(graph.outputs, _smallest_input(graph.session), options)
                except Exception as exc:  # never worth failing over: log and go on
                    log.warning("could not shrink the arena of %s:%s: %s", loaded.ref, role,
                                exc)
    malloc_trim()


def _smallest_input(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """Zeros of batch 1 in each input's contract shape (symbolic sides: WARMUP_SIDE)."""
    feeds = {}
    for meta in session.get_inputs():
        shape = [dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else WARMUP_SIDE)
                 for axis, dim in enumerate(meta.shape)]
        dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
        feeds[meta.name] = np.zeros(shape, dtype)
    return feeds
