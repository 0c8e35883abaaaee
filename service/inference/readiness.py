"""What /readyz reports of each model: the pointer, what this process serves, the last
load failure, and whether it serves a fallback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from model_store import errors as store_errors
from model_store.store import ModelStore
from service.inference.sessions import LoadedVersion


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


def model_states(store: ModelStore, served: Mapping[str, LoadedVersion],
                 failures: Mapping[str, LoadFailure]) -> list[ModelState]:
    """Every model of the store as /readyz reports it (blocking: reads the store)."""
    states = []
    for name in store.model_names():
        loaded = served.get(name)
        failure = failures.get(name)
        problem = failure.error if failure else None
        try:
            summary = store.summary(name)
            task, active = summary.task, summary.active
        except store_errors.ManifestInvalid as exc:  # e.g. a task no plugin registers
            task, problem = None, problem or str(exc)
            try:
                active = store.active_version(name)
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
