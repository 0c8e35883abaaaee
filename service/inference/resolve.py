"""Which loaded version serves a request: the task's default model or the named one, its
active version or the ``?version=`` asked for (through the LRU), at the precision asked."""

from __future__ import annotations

from core.settings import Settings
from model_store import errors as store_errors
from model_store.store import ModelStore
from service.errors import ModelNotReady, WrongTask
from service.inference.executors import PoolExecutors
from service.inference.lru import VersionLRU
from service.inference.sessions import LoadedVersion, choose_precision
from service.inference.swap import ActiveVersions
from service.unserved import NothingServes
from tasks import default_model


class VersionResolver:
    def __init__(self, store: ModelStore, settings: Settings, executors: PoolExecutors,
                 active: ActiveVersions, lru: VersionLRU) -> None:
        self.store = store
        self.settings = settings
        self._executors = executors
        self._active = active
        self._lru = lru

    async def resolve(self, task: str, model: str | None, version: int | None,
                      precision: str | None = None) -> LoadedVersion:
        """The version a request is served by (default model of the task, active version),
        at ``precision`` (None: Settings.default_precision; sessions.choose_precision)."""
        name = model or default_model(task, self.settings.default_models)
        loaded = self._active.served.get(name)
        if version is not None and (loaded is None or loaded.manifest.version != version):
            loaded = await self._extra_version(name, version)
        elif loaded is None:
            loaded = await self._unloaded(task, name, is_default=model is None)
        if loaded.task != task:
            raise WrongTask(name, loaded.task, task)
        chosen = choose_precision(loaded.manifest, loaded.spec, precision,
                                  self.settings.default_precision)
        ready = loaded.loaded_precision(chosen)  # the first request at it loads it (loader)
        return ready if ready is not None else await self._executors.load(
            loaded.load_precision, chosen, self.settings, self.store)

    async def _unloaded(self, task: str, name: str, is_default: bool) -> LoadedVersion:
        # The 503's advice (jobs on the way, refused versions, the import command for this
        # task) is added where the error is answered: service/unserved.py.
        try:
            active = await self._executors.io(self.store.active_version, name)
        except store_errors.ModelNotFound:
            if not is_default:
                raise
            # The task's default model not existing yet is a fresh install, not a typo.
            raise NothingServes(task, name, f"no model serves {task!r} yet") from None
        if active is None:
            raise NothingServes(task, name, f"model {name!r} has no active version")
        await self._active.sync(name)  # published since the last poll: load it now
        loaded = self._active.served.get(name)
        if loaded is None:
            failure = self._active.failures.get(name)
            raise ModelNotReady(f"{name}@{active} failed to load: "
                                f"{failure.error if failure else 'unknown error'}")
        return loaded

    async def _extra_version(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        async with self._active.lock(name):
            cached = self._lru.get(key)
            if cached is not None:
                return cached
            # 404 for an unknown version, 409 for one that failed parity
            manifest = await self._executors.io(self.store.servable_manifest, name, version)
            try:
                loaded = await self._active.load(name, version)
            except Exception as exc:
                raise ModelNotReady(f"{manifest.ref} failed to load: {exc}") from exc
            self._lru.put(key, loaded)
            return loaded
