"""Datasets on an S3-compatible object store, beside the models (``TOONFORGE_STORE_URL``).

    datasets/<id>/report.json, index.json     the intake report and the split (JSON)
    datasets/<id>/files.json                  {path under data/: {sha256, bytes}} -> blobs
    datasets/<id>/meta.json                   written LAST, If-None-Match: * (claims the id)
    blobs/sha256/<hex>                        the files' bytes (shared with the models)

A dataset without meta.json does not exist: publish uploads everything else first, and
delete removes meta.json first, so a reader sees the whole dataset or none of it.
meta.json also records the sha256 of the three JSON files it was published with (kept as
blobs too), and readers take those: a publisher that lost the race for the same id and
overwrote the plain copies cannot change what the winner published.

Staging and uploads stay on this process's local disk (intake extracts and scans there);
``data_dir`` lays a dataset out locally as links into the blob cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from model_store.dataset_schema import DatasetIndex, DatasetMeta, IntakeReport
from model_store.datasets import (
    DATA_DIR,
    INDEX_FILE,
    META_FILE,
    REPORT_FILE,
    STAGING,
    DatasetStore,
    validate_dataset_id,
)
from model_store.errors import DatasetExists, DatasetInUse, DatasetNotFound
from model_store.objects import Conflict, ObjectStore
from model_store.s3_models import CACHE_DIR, JSON, put_bytes_blob, shared_cache
from model_store.store import NAME_RE

FILES_FILE = "files.json"
OBJECTS_FIELD = "objects"  # in meta.json: the sha256 of report, index and files.json
UPLOAD_THREADS = 8  # concurrent blob transfers of one dataset


def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{validate_dataset_id(dataset_id)}/"


class S3DatasetStore(DatasetStore):
    def __init__(self, objects: ObjectStore, cache_dir: Path | str, *,
                 cache_max_bytes: int) -> None:
        """The datasets in ``objects``; ``cache_dir`` is this process's own working
        directory (the same one its S3ModelStore uses): staging, uploads, the cache."""
        root = Path(cache_dir)
        self.objects = objects
        self.dir = root / "datasets"
        self.staging_dir = self.dir / STAGING
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.cache = shared_cache(root / CACHE_DIR, objects, cache_max_bytes)

    # ----- paths
    def path(self, dataset_id: str) -> Path:
        """Where ``data_dir`` lays the dataset out locally (index.json, report.json and
        data/); it exists only once ``data_dir`` built it."""
        return self.cache.trees / "datasets" / validate_dataset_id(dataset_id)

    def data_dir(self, dataset_id: str) -> Path:
        """The dataset's files as a local directory (fetched and hashed on first use); the
        index's sample paths are relative to it, and its parent holds index.json."""
        record = self._record(dataset_id)
        files = {f"{DATA_DIR}/{rel}": entry["sha256"]
                 for rel, entry in self._json(dataset_id, record, FILES_FILE).items()}
        shas = record.get(OBJECTS_FIELD) or {}
        for name in (INDEX_FILE, REPORT_FILE):
            sha = shas.get(name)
            if sha is None:  # no recorded blob: make one from the plain copy
                sha = put_bytes_blob(self.objects, self._raw(dataset_id, name),
                                     self.staging_dir)
            files[name] = sha
        wanted = frozenset(files.values())
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:  # many small files: in parallel
            list(pool.map(lambda sha: self.cache.blob(sha, protect=wanted), sorted(wanted)))
        tree = self.cache.tree(f"datasets/{dataset_id}", files)
        return tree / DATA_DIR

    # ----- reading
    def _record(self, dataset_id: str) -> dict[str, Any]:
        """meta.json as stored (DatasetMeta plus the JSON files' sha256)."""
        data = self.objects.get(f"{dataset_prefix(dataset_id)}{META_FILE}")
        if data is None:
            raise DatasetNotFound(f"dataset {dataset_id!r} does not exist")
        record = json.loads(data)
        if not isinstance(record, dict):
            raise DatasetNotFound(f"dataset {dataset_id!r} does not exist")
        return record

    def _raw(self, dataset_id: str, name: str) -> bytes:
        data = self.objects.get(f"{dataset_prefix(dataset_id)}{name}")
        if data is None:  # deleted since its meta.json was read
            raise DatasetNotFound(f"dataset {dataset_id!r} does not exist")
        return data

    def _json_bytes(self, dataset_id: str, record: dict[str, Any], name: str) -> bytes:
        sha = (record.get(OBJECTS_FIELD) or {}).get(name)
        if sha is None:
            return self._raw(dataset_id, name)
        return self.cache.blob(sha).read_bytes()

    def _json(self, dataset_id: str, record: dict[str, Any], name: str) -> dict[str, Any]:
        value = json.loads(self._json_bytes(dataset_id, record, name))
        return value if isinstance(value, dict) else {}

    def ids(self) -> list[str]:
        found = []
        for key, _size in self.objects.list("datasets/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == META_FILE and NAME_RE.fullmatch(parts[1]):
                found.append(parts[1])
        return sorted(found)

    def get(self, dataset_id: str) -> DatasetMeta:
        return DatasetMeta.model_validate(self._record(dataset_id))

    def report(self, dataset_id: str) -> IntakeReport:
        record = self._record(dataset_id)
        return IntakeReport.model_validate_json(
            self._json_bytes(dataset_id, record, REPORT_FILE))

    def index(self, dataset_id: str) -> DatasetIndex:
        record = self._record(dataset_id)
        return DatasetIndex.model_validate_json(
            self._json_bytes(dataset_id, record, INDEX_FILE))

    # ----- writing
    def publish(self, staged: Path, meta: DatasetMeta, report: IntakeReport,
                index: DatasetIndex) -> DatasetMeta:
        """Upload ``staged/data/`` as blobs, then the JSON files, then claim the id by
        creating meta.json (If-None-Match: *): ``DatasetExists`` when it is taken.
        ``staged`` is only read (the caller's staging context removes it)."""
        prefix = dataset_prefix(meta.id)
        if self.objects.size(f"{prefix}{META_FILE}") is not None:
            raise DatasetExists(f"dataset {meta.id!r} already exists")
        data_root = staged / DATA_DIR
        paths = sorted(p for p in data_root.rglob("*") if p.is_file() and not p.is_symlink())
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            digests = list(pool.map(self.objects.put_blob, paths))
        files = {p.relative_to(data_root).as_posix(): {"sha256": sha, "bytes": p.stat().st_size}
                 for p, sha in zip(paths, digests, strict=True)}
        documents: dict[str, bytes] = {
            REPORT_FILE: _dump(report),
            INDEX_FILE: _dump(index),
            FILES_FILE: json.dumps(files, indent=1, sort_keys=True).encode(),
        }
        shas = {}
        for name, data in documents.items():
            shas[name] = put_bytes_blob(self.objects, data, self.staging_dir)
            self.objects.put(f"{prefix}{name}", data, content_type=JSON)
        record = {**meta.model_dump(mode="json"), OBJECTS_FIELD: shas}
        try:
            self.objects.put(f"{prefix}{META_FILE}", json.dumps(record, indent=2).encode(),
                             if_absent=True, content_type=JSON)
        except Conflict:
            raise DatasetExists(f"dataset {meta.id!r} already exists") from None
        return meta

    def delete(self, dataset_id: str, in_use: Callable[[str], bool] | None = None) -> None:
        """Remove a dataset: meta.json first (it is gone for every reader at once), then
        the rest of its prefix and this process's local copy. ``in_use`` as for the local
        store. The blobs stay: other datasets or versions may share them, and a sweep of
        unreferenced blobs is not built yet."""
        prefix = dataset_prefix(dataset_id)
        self._record(dataset_id)
        if in_use is not None and in_use(dataset_id):
            raise DatasetInUse(f"dataset {dataset_id!r} is used by an unfinished job")
        self.objects.delete(f"{prefix}{META_FILE}")
        self.objects.delete_prefix(prefix)
        self.cache.drop_tree(f"datasets/{dataset_id}")


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(indent=2).encode()
