"""Which version of each model this process serves, and swapping it (hot reload).

One LoadedVersion per model, swapped atomically when the store's ``active`` pointer moves
(the watcher in reload.py, or an activation through this process). Requests hold the
LoadedVersion they started with, so a swap never breaks them.

Last good version: a model whose pointer names a version that cannot load keeps serving
the version it had, or at start the newest loadable version of its activation history;
``/readyz`` reports that as a fallback (``ModelState.fallback``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from core.settings import Settings
from model_store import errors as store_errors
from model_store.errors import ActivationRefused
from model_store.store import ModelStore
from service.inference.executors import PoolExecutors
from service.inference.lru import VersionLRU
from service.inference.readiness import LoadFailure
from service.inference.sessions import LoadedVersion, load_version
from service.metrics import MODEL_RELOAD_FAILURES, MODEL_RELOADS, MODEL_SERVED_VERSION

log = logging.getLogger(__name__)


class ActiveVersions:
    """The served version of each model, the last load failure of each, and one lock per
    model so that a sync, an activation and a ``?version=`` load never race."""

    def __init__(self, store: ModelStore, settings: Settings, executors: PoolExecutors,
                 lru: VersionLRU, on_swap: Callable[[], None]) -> None:
        self.store = store
        self.settings = settings
        self._executors = executors
        self._lru = lru
        self._on_swap = on_swap
        self.served: dict[str, LoadedVersion] = {}
        self.failures: dict[str, LoadFailure] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str, version: int) -> LoadedVersion:
        """Load and warm ``name@version`` on the loader thread (one load at a time)."""
        return await self._executors.load(load_version, self.store, name, version,
                                          self.settings)

    async def sync_all(self) -> None:
        """Bring every model in line with its ``active`` pointer (the watcher's tick)."""
        names = await self._executors.io(self.store.model_names)
        await asyncio.gather(*(self.sync(name) for name in names))

    async def sync(self, name: str) -> None:
        async with self.lock(name):
            try:
                active = await self._executors.io(self.store.active_version, name)
            except store_errors.StoreError:
                return  # removed, or a line still being written
            current = self.served.get(name)
            failure = self.failures.get(name)
            if active is None or (current is not None and current.manifest.version == active):
                if failure is not None and failure.version != active:
                    del self.failures[name]  # the pointer left the broken version
                return
            if (failure is not None and failure.version == active
                    and time.monotonic() - failure.at < self.settings.reload_retry_s):
                return  # do not hammer a broken version every poll
            try:
                loaded = await self._obtain(name, active)
            except Exception as exc:
                self.failures[name] = LoadFailure(active, str(exc), time.monotonic())
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
            history = await self._executors.io(self.store.history, name)
            existing = set(await self._executors.io(self.store.versions, name))
        except store_errors.StoreError:
            return None
        tried: set[int] = {broken}
        for entry in reversed(history):
            version = entry.get("version")
            if not isinstance(version, int) or version in tried or version not in existing:
                continue
            tried.add(version)
            try:
                await self._executors.io(self.store.servable_manifest, name, version)
                loaded = await self._obtain(name, version)
            except Exception as exc:
                log.warning("fallback %s@%s cannot load either: %s", name, version, exc)
                continue
            self._swap(name, loaded, fallback=True)
            return loaded
        return None

    async def _obtain(self, name: str, version: int) -> LoadedVersion:
        """A loaded version, from the LRU when it is already there."""
        cached = self._lru.take((name, version))
        return cached if cached is not None else await self.load(name, version)

    def _swap(self, name: str, loaded: LoadedVersion, *, fallback: bool = False) -> None:
        previous = self.served.get(name)
        self.served[name] = loaded  # one assignment: readers see old or new, never neither
        MODEL_SERVED_VERSION.labels(name).set(loaded.manifest.version)
        if not fallback:  # a fallback keeps the failure: it is why /readyz says fallback
            self.failures.pop(name, None)
        self._on_swap()  # the retired version's memory goes back at the next idle
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
        async with self.lock(name):
            # verified: a corrupt version is refused as `version_corrupt` naming the file
            manifest = await self._executors.io(self.store.verified_manifest, name, version)
            current = self.served.get(name)
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
            previous = await self._executors.io(
                functools.partial(self.store.activate, rollback=rollback), name, version)
            self._swap(name, loaded)
            return previous

    def clear(self) -> None:
        self.served.clear()
