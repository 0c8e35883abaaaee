"""Which store backend the test processes run on: ``TOONFORGE_TEST_STORE=local`` (default)
or ``s3``.

With ``s3`` the suite's store-touching tests (marker ``store``) run against moto's S3
server (tests/support/s3.py): a test still builds its store as a local directory, as it
always did, and the first process started on that directory (``ApiServer``, a worker of
``WorkerPool``) gets a fresh bucket seeded from it with ``push_local_store`` -- the same
copy ``toonforge store push`` makes. From then on the bucket is the store: every process
on it has its OWN ``store_dir`` (working dir and cache), as on separate hosts, and a test
that changes the store afterwards does it through ``store_at(path)`` (the bucket's store,
or the directory's when local), never by writing the directory.

Tests that read or write the store directory itself and cannot mean the same on S3 are
marked ``local_store_only(reason)``; they skip under ``s3`` with the reason.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings
    from jobs.artifacts import JobArtifacts
    from model_store.datasets import DatasetStore
    from model_store.store import ModelStore
    from tests.support.s3 import S3Server

TEST_STORE = os.environ.get("TOONFORGE_TEST_STORE", "local").strip().lower() or "local"
if TEST_STORE not in ("local", "s3"):
    raise RuntimeError(f"TOONFORGE_TEST_STORE={TEST_STORE!r}: use 'local' or 's3'")


def on_s3() -> bool:
    """True when this run's store-touching tests use the S3 store."""
    return TEST_STORE == "s3"


@dataclass(frozen=True)
class RemoteStore:
    """One S3 store (a fresh bucket) for test processes: its URL and the environment a
    subprocess needs to use it (``S3Server.env``). ``cache_root`` is where the test
    process's own views of it keep their working dirs (never a subprocess's)."""

    url: str
    env: dict[str, str]
    cache_root: Path

    def settings(self, store_dir: Path, **overrides: object) -> Settings:
        """Settings of a process on this store whose private ``store_dir`` is given."""
        from core.settings import Settings

        return Settings(_env_file=None, store_dir=store_dir, store_url=self.url,
                        s3_endpoint_url=self.env["TOONFORGE_S3_ENDPOINT_URL"], **overrides)

    def process_env(self, store_dir: Path) -> dict[str, str]:
        """What a subprocess adds to its environment: the store and its own directory."""
        return {**self.env, "TOONFORGE_STORE_DIR": str(store_dir)}

    def private_dir(self, name: str) -> Path:
        path = self.cache_root / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def models(self, **kwargs: object) -> ModelStore:
        from model_store.factory import open_model_store

        return open_model_store(self.settings(self.private_dir("models")), **kwargs)

    def datasets(self) -> DatasetStore:
        from model_store.factory import open_dataset_store

        return open_dataset_store(self.settings(self.private_dir("datasets")))

    def artifacts(self) -> JobArtifacts:
        from jobs.artifacts import open_artifacts

        return open_artifacts(self.settings(self.private_dir("artifacts")))


_server: S3Server | None = None
_seeded: dict[Path, RemoteStore] = {}
_lock = threading.Lock()


def use_server(server: S3Server | None) -> None:
    """The moto server this run's S3 stores live on (tests/conftest.py sets it)."""
    global _server
    _server = server
    _seeded.clear()


def new_remote(cache_root: Path, seed_from: Path | None = None) -> RemoteStore:
    """A fresh bucket on the run's server, seeded from the store directory ``seed_from``
    when it holds one (``push_local_store``: models, pointers, histories, datasets)."""
    if _server is None:
        raise RuntimeError("no S3 server: the s3_server fixture starts one (tests/conftest.py)")
    url = _server.new_store_url()
    remote = RemoteStore(url, _server.env(url), cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    if seed_from is not None and ((seed_from / "models").is_dir()
                                  or (seed_from / "datasets").is_dir()):
        from model_store.migrate import push_local_store
        from model_store.s3_datasets import S3DatasetStore
        from model_store.s3_models import S3ModelStore

        models, datasets = remote.models(), remote.datasets()
        assert isinstance(models, S3ModelStore) and isinstance(datasets, S3DatasetStore)
        summary = push_local_store(seed_from, models, datasets)
        assert not summary.versions_conflicting, summary  # a fresh bucket has nothing
    return remote


def remote_for(local_store: Path) -> RemoteStore:
    """The bucket that stands for the store directory ``local_store`` in this run (made
    and seeded from the directory on first use, then the same one for every process)."""
    key = Path(local_store).resolve()
    with _lock:
        remote = _seeded.get(key)
        if remote is None:
            remote = _seeded[key] = new_remote(key.parent / f"{key.name}.s3-views", key)
        return remote


def remote_or_none(local_store: Path) -> RemoteStore | None:
    """``remote_for(local_store)`` under ``TOONFORGE_TEST_STORE=s3``; None otherwise."""
    return remote_for(local_store) if on_s3() else None


def store_at(local_store: Path, **kwargs: object) -> ModelStore:
    """The model store the test's processes use for ``local_store``: the directory itself,
    or under ``s3`` its bucket (seen through a private working dir of this process)."""
    if on_s3():
        return remote_for(local_store).models(**kwargs)
    from model_store.store import ModelStore

    return ModelStore(local_store, **kwargs)


def datasets_at(local_store: Path) -> DatasetStore:
    """``store_at`` for the datasets."""
    if on_s3():
        return remote_for(local_store).datasets()
    from model_store.datasets import DatasetStore

    return DatasetStore(local_store)


def artifacts_at(local_store: Path) -> JobArtifacts:
    """``store_at`` for job files (checkpoints, samples)."""
    if on_s3():
        return remote_for(local_store).artifacts()
    from jobs.artifacts import JobArtifacts

    return JobArtifacts(local_store)
