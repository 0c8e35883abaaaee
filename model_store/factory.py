"""The one place that chooses the store backend from settings.

``TOONFORGE_STORE_URL`` unset: ``ModelStore`` / ``DatasetStore`` on ``store_dir`` (a local
directory, or one volume shared by every process of one host). ``s3://bucket/prefix``:
``S3ModelStore`` / ``S3DatasetStore`` (model_store/s3_models.py, s3_datasets.py) over an
S3-compatible object store, with ``store_dir`` as this process's private cache. Callers
(API, worker, CLI) never construct a backend themselves: they call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from model_store.datasets import DatasetStore
    from model_store.notify import ActivationNotifier
    from model_store.objects import ObjectStore
    from model_store.store import ModelStore


def is_remote(settings: Settings) -> bool:
    return bool(settings.store_url)


def object_store(settings: Settings) -> ObjectStore | None:
    """The configured S3 object store, or None for a local store."""
    if not settings.store_url:
        return None
    from model_store.objects import ObjectStore

    return ObjectStore.from_url(settings.store_url, endpoint_url=settings.s3_endpoint_url,
                                region=settings.s3_region)


def store_location(settings: Settings) -> str:
    """What the store is, for logs and /readyz (no credentials, no server paths)."""
    return settings.store_url if settings.store_url else "local directory"


def open_model_store(settings: Settings, *, create: bool = True,
                     notifier: ActivationNotifier | None = None) -> ModelStore:
    objects = object_store(settings)
    if objects is None:
        from model_store.store import ModelStore

        return ModelStore(settings.store_dir, create=create, notifier=notifier)
    from model_store.s3_models import S3ModelStore

    return S3ModelStore(objects, settings.store_dir, notifier=notifier,
                        cache_max_bytes=settings.store_cache_max_bytes)


def open_dataset_store(settings: Settings) -> DatasetStore:
    objects = object_store(settings)
    if objects is None:
        from model_store.datasets import DatasetStore

        return DatasetStore(settings.store_dir)
    from model_store.s3_datasets import S3DatasetStore

    return S3DatasetStore(objects, settings.store_dir,
                          cache_max_bytes=settings.store_cache_max_bytes)
